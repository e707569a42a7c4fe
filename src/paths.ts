/** Where aegis-kit's own files are: the package root holds `kits/`, `schemas/` and `images/`. */
import {fileURLToPath} from 'node:url'

/** The package root (this file is `dist/paths.js` or `src/paths.ts`). */
export const packageRoot = fileURLToPath(new URL('..', import.meta.url))

export const bundledKitsDir = fileURLToPath(new URL('../kits/', import.meta.url))
