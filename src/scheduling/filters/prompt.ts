/**
 * The prompt as llm-d's external plugin protocol sends it (the Gateway API Inference Extension's
 * construction, which the proposal reused): a body with `messages` is a chat request, each message
 * whose `content` is a string becoming `<|im_start|>{role}\n{content}<|im_end|>\n`; otherwise the
 * completions `prompt`.
 *
 * Where the GIE code failed the request (a `prompt` that is not a string, a body that is not JSON)
 * this returns what it can, since a filter must not turn a request the router accepted into an
 * error: an array of strings (a batch of prompts) is joined with "\n"; token arrays, other types,
 * a missing prompt, a body that does not parse (a partial body cut at Envoy's buffer limit) give "".
 * Chat messages whose content is not a string (parts, e.g. images) or whose role is not a string are
 * skipped, as the GIE code skips them, so a plugin hashing the prompt sees what it saw there.
 */
export function promptOf(body: Buffer | undefined): string {
  if (body === undefined || body.length === 0) return '';
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return '';
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return '';
  const fields = parsed as Record<string, unknown>;
  if ('messages' in fields) return chatPrompt(fields.messages);
  return completionPrompt(fields.prompt);
}

function chatPrompt(messages: unknown): string {
  if (!Array.isArray(messages)) return '';
  let prompt = '';
  for (const message of messages) {
    if (typeof message !== 'object' || message === null) continue;
    const { role, content } = message as Record<string, unknown>;
    if (typeof role !== 'string' || typeof content !== 'string') continue;
    prompt += `<|im_start|>${role}\n${content}<|im_end|>\n`;
  }
  return prompt;
}

function completionPrompt(prompt: unknown): string {
  if (typeof prompt === 'string') return prompt;
  if (Array.isArray(prompt) && prompt.length > 0 && prompt.every((part) => typeof part === 'string')) return prompt.join('\n');
  return '';
}
