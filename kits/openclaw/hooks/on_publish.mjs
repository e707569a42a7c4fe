// on_publish(app, release, artifacts) for OpenClaw: a release report that says what was
// published (kit, OpenClaw version, images by platform) so a reader of the registry knows what
// a tag holds without pulling it.
export function on_publish(app, release, artifacts) {
  const openclaw = (app.image?.npm?.packages ?? []).find((spec) => spec.startsWith('openclaw@'))
  const list = Array.isArray(artifacts) ? artifacts : []
  return {
    kit: `${app.name}@${app.version}`,
    reference: release?.reference ?? null,
    openclaw: openclaw ? openclaw.slice('openclaw@'.length) : null,
    node: app.image?.node ?? null,
    artifacts: list.map((artifact) => ({kind: artifact.kind ?? 'unknown', digest: artifact.digest, platform: artifact.platform ?? null, size: artifact.size ?? null})),
    summary: `${app.name} ${app.version} (OpenClaw ${openclaw ? openclaw.slice(9) : 'unknown'}) with ${list.length} artifact${list.length === 1 ? '' : 's'}`,
  }
}
