/**
 * The local image store: an OCI image layout on disk (see README.md here). The CLI creates one
 * `LocalStore` at `defaultStoreRoot()` (or a root it was given) and calls its methods.
 */
export {LocalStore} from './local-store.js'
export {defaultStoreRoot, describeStore} from './paths.js'
// For the directories beside the layout that other modules own (`kits/`, see README.md): the
// same lock the store takes for index.json.
export {withFileLock} from './lock.js'
// For walking an image's graph in the store (doctor checks every tag's content is there).
export {walkGraph, type GraphNode} from './graph.js'
export type {
  DockerExportOptions, ImageSummary, ImportedImage, ImportOptions, InspectResult, PruneResult, Referrer, RemovedTag, StoreEntry,
} from './types.js'
