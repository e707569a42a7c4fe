/** Where aegis-kit's own files are: the package root holds `kits/`, `schemas/` and `images/`. */
import {fileURLToPath} from 'node:url'

// This file is dist/paths.js or src/paths.ts: the package root is one up.
export const bundledKitsDir = fileURLToPath(new URL('../kits/', import.meta.url))
