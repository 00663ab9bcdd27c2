/**
 * An operator's mistake, found while reading the flags or while starting (route file, DNS, ports):
 * what is wrong, the flag it concerns and what to do about it. main.ts prints it as one line and
 * exits 2; anything else that escapes is a bug and keeps its stack trace.
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';

  constructor(
    /** The flag (or argument) at fault, as written on the command line: `--static-hosts`. */
    readonly flag: string,
    /** What is wrong, without the flag: `"10.0.0.1" has no port`. */
    message: string,
    /** What to do about it: `write host:port, e.g. 10.0.0.1:8000`. */
    readonly hint: string,
  ) {
    super(message);
  }

  /** `--static-hosts: "10.0.0.1" has no port (hint: write host:port, e.g. 10.0.0.1:8000)` */
  get line(): string {
    // A quoted system or parser message may span lines; the operator gets exactly one.
    return `${this.flag}: ${this.message} (hint: ${this.hint})`.replace(/\s*\n\s*/g, ' ');
  }
}
