/**
 * The local image store: an OCI image layout on disk (see README.md here). The CLI creates one
 * `LocalStore` at `defaultStoreRoot()` (or a root it was given) and calls its methods.
 */
export {LocalStore} from './local-store.js'
export {defaultDataDir, defaultStoreRoot} from '../paths.js'
export {describeStore} from './paths.js'
// For walking an image's graph in the store (doctor checks every tag's content is there).
export {walkGraph, type GraphNode} from './graph.js'
export type {
  DockerExportOptions,
  ImageSummary,
  ImportedImage,
  ImportOptions,
  InspectResult,
  PruneResult,
  Referrer,
  RemovedTag,
  StoreEntry,
} from './types.js'
