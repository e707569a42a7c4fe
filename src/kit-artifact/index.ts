/**
 * Kits as OCI artifacts: packing a kit into a reproducible layer and an artifact manifest,
 * publishing it with its image under one reference, and pulling it back into a directory that
 * `validate` and `hooks` accept. See docs/architecture.md ("Kits in registries").
 */
export {publishKit, type PublishOptions, type PublishResult} from './publish.js'
export {pullKit, type PullKitOptions, type PullKitResult} from './pull.js'
export {installKit, type InstalledKit} from './install.js'
export {packKitLayer, unpackKitLayer, MAX_KIT_BYTES} from './layer.js'
export {findKitDescriptor, kitArtifactManifest, releaseIndex} from './artifact.js'
export {
  exportForAegis,
  formatLeftOutWarning,
  writeAegisExport,
  type AegisExport,
  type AegisExportOptions,
} from './aegis-export.js'
