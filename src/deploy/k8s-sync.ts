#!/usr/bin/env node
// `npm run k8s-sync`: rewrites the generated parts of the k8s/ manifests (src/deploy/manifests.ts).
import { readFileSync, writeFileSync } from 'node:fs';
import { expectedManifest, MANIFESTS } from './manifests.js';

for (const manifest of MANIFESTS) {
  const text = expectedManifest('.', manifest);
  if (text === readFileSync(manifest, 'utf8')) continue;
  writeFileSync(manifest, text);
  process.stdout.write(`wrote ${manifest}\n`);
}
