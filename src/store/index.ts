/**
 * The local image store: an OCI image layout on disk (see README.md here). The CLI creates one
 * `LocalStore` at `defaultStoreRoot()` (or a root it was given) and calls its methods.
 */
export {LocalStore} from './local-store.js'
export {defaultStoreRoot, describeStore} from './paths.js'
// For the directories beside the layout that other modules own (`kits/`, see README.md): the same
// lock and atomic replace the store uses for index.json.
export {withFileLock} from './lock.js'
export {errorCode, statIfExists, writeFileAtomically} from './fs-util.js'
export type {
  DockerExportOptions, ImageSummary, ImportedImage, ImportOptions, InspectResult, PruneResult, Referrer, RemovedTag, StoreEntry,
} from './types.js'
