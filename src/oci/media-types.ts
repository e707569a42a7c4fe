/**
 * Media types and annotation keys: the OCI and Docker ones aegis-kit reads and writes, and
 * aegis-kit's own (kits, guests). Every module names them from here, so a type or key is spelled
 * once.
 */

export const MediaType = {
  ImageIndex: 'application/vnd.oci.image.index.v1+json',
  ImageManifest: 'application/vnd.oci.image.manifest.v1+json',
  ImageConfig: 'application/vnd.oci.image.config.v1+json',
  LayerTar: 'application/vnd.oci.image.layer.v1.tar',
  LayerTarGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  LayerTarZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  Empty: 'application/vnd.oci.empty.v1+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
  DockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  DockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  SpdxJson: 'application/spdx+json',
  /** aegis-kit's own: a kit (manifest, schema version, hooks) published as an OCI artifact. */
  KitArtifact: 'application/vnd.aegis.kit.v1',
  KitLayer: 'application/vnd.aegis.kit.layer.v1.tar+gzip',
  /** The JSON report a kit's on_publish hook returned, a layer of the kit artifact. */
  KitReport: 'application/vnd.aegis.kit.report.v1+json',
  /** aegis-kit's own: the guest kernel and initramfs a VM boots, as one artifact. */
  GuestArtifact: 'application/vnd.aegis.guest.v1',
  GuestKernel: 'application/vnd.aegis.guest.kernel.v1',
  GuestInitrd: 'application/vnd.aegis.guest.initrd.v1.cpio+gzip',
} as const

/** Image configs: what `readImageConfig` and the image view accept as a config to parse. */
export const IMAGE_CONFIG_MEDIA_TYPES: ReadonlySet<string> = new Set([MediaType.ImageConfig, MediaType.DockerConfig])

export const Annotation = {
  /** A blob's file name (what `oras pull` writes it as), or an image's or artifact's name. */
  Title: 'org.opencontainers.image.title',
  Version: 'org.opencontainers.image.version',
  Created: 'org.opencontainers.image.created',
  Description: 'org.opencontainers.image.description',
  Source: 'org.opencontainers.image.source',
  BaseName: 'org.opencontainers.image.base.name',
  BaseDigest: 'org.opencontainers.image.base.digest',
  /** aegis-kit's own: the kit manifest schema a kit artifact was written for. */
  KitSchemaVersion: 'io.aegis.kit.schema-version',
  /** aegis-kit's own: what a guest artifact was assembled from. */
  GuestKernelPackage: 'io.aegis.guest.kernel.package',
  GuestKernelVersion: 'io.aegis.guest.kernel.version',
  GuestKernelRelease: 'io.aegis.guest.kernel.release',
  GuestHarness: 'io.aegis.guest.harness',
  GuestToolchain: 'io.aegis.guest.toolchain',
  GuestArch: 'io.aegis.guest.arch',
} as const
