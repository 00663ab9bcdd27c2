#!/usr/bin/env node
/** `npm run try` / `llm-extproc-try`: see command.ts and README "Try it". */
import { tryCommand } from './command.js';

process.exitCode = await tryCommand(process.argv.slice(2), process);
