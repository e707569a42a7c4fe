/**
 * The local image store: an OCI image layout on disk (see README.md here). The CLI creates one
 * `LocalStore` at `defaultStoreRoot()` (or a root it was given) and calls its methods.
 */
export {LocalStore} from './local-store.js'
export {defaultStoreRoot, describeStore} from './paths.js'
export {parseReference, parseTagReference, REF_NAME_ANNOTATION, DEFAULT_TAG, type ImageReference} from './reference.js'
export type {
  DockerExportOptions, ImageSummary, ImportedImage, ImportOptions, InspectResult, PruneResult, Referrer, RemovedTag, StoreEntry,
} from './types.js'
