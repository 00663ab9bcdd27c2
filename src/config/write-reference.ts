#!/usr/bin/env node
// `npm run config-docs`: regenerates docs/config.schema.json and the settings table of docs/configuration.md.
import { readFileSync, writeFileSync } from 'node:fs';
import { REFERENCE_FILE, SCHEMA_FILE, schemaText, withSettingsTable } from './reference.js';

writeFileSync(SCHEMA_FILE, schemaText());
writeFileSync(REFERENCE_FILE, withSettingsTable(readFileSync(REFERENCE_FILE, 'utf8')));
process.stdout.write(`wrote ${SCHEMA_FILE} and ${REFERENCE_FILE}\n`);
