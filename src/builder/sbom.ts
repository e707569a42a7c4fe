/** An SPDX 2.3 SBOM of what a built image holds: its Debian and npm packages, with versions. */
import type {PackageRecord} from './layer-cache.js'

export interface SbomSubject {
  name: string
  version: string
  platform: string
  configDigest: string
  created: string
  tool: string
}

export function spdxDocument(subject: SbomSubject, packages: PackageRecord[]): Record<string, unknown> {
  const arch = subject.platform.split('/')[1]
  const id = (record: PackageRecord) =>
    `SPDXRef-${record.kind}-${record.name}-${record.version}`.replace(/[^A-Za-z0-9.-]/g, '-')
  const purl = (record: PackageRecord) =>
    record.kind === 'deb'
      ? `pkg:deb/debian/${record.name}@${encodeURIComponent(record.version)}?arch=${record.architecture ?? arch}`
      : `pkg:npm/${record.name.startsWith('@') ? `%40${record.name.slice(1)}` : record.name}@${record.version}`
  const unique = new Map(packages.map((record) => [id(record), record]))
  return {
    spdxVersion: 'SPDX-2.3',
    dataLicense: 'CC0-1.0',
    SPDXID: 'SPDXRef-DOCUMENT',
    name: `${subject.name}-${subject.version}-${subject.platform.replace('/', '-')}`,
    documentNamespace: `https://aegis.dev/spdx/${subject.name}/${subject.version}/${subject.configDigest.replace('sha256:', '')}`,
    creationInfo: {created: subject.created, creators: [`Tool: ${subject.tool}`]},
    packages: [
      {
        name: subject.name,
        SPDXID: 'SPDXRef-image',
        versionInfo: subject.version,
        downloadLocation: 'NOASSERTION',
        filesAnalyzed: false,
        primaryPackagePurpose: 'CONTAINER',
      },
      ...[...unique.entries()].map(([spdxId, record]) => ({
        name: record.name,
        SPDXID: spdxId,
        versionInfo: record.version,
        downloadLocation: 'NOASSERTION',
        filesAnalyzed: false,
        licenseDeclared:
          record.license && /^[A-Za-z0-9.+-]+( (AND|OR) [A-Za-z0-9.+-]+)*$/.test(record.license)
            ? record.license
            : 'NOASSERTION',
        externalRefs: [{referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: purl(record)}],
      })),
    ],
    relationships: [
      {spdxElementId: 'SPDXRef-DOCUMENT', relationshipType: 'DESCRIBES', relatedSpdxElement: 'SPDXRef-image'},
      ...[...unique.keys()].map((spdxId) => ({
        spdxElementId: 'SPDXRef-image',
        relationshipType: 'CONTAINS',
        relatedSpdxElement: spdxId,
      })),
    ],
  }
}
