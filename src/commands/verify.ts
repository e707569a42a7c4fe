import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {registryFlags} from '../cli/flags.js'
import {RemoteRepository} from '../registry/index.js'
import {keyHint, loadVerificationKey, verifyRemote} from '../signing/index.js'

export interface VerifyReport {
  /** The verified manifest, `registry/repository@sha256:…`. */
  reference: string
  digest: string
  /** The signature manifest whose bundle verified. */
  signature: string
  /** base64 SHA-256 of the public key, as cosign's bundles name it. */
  key: string
}

export default class Verify extends BaseCommand {
  static override summary = 'Check that a kit or image in a registry is signed with a key.'
  static override description = `Resolves REF to its manifest digest and looks for a signature of that digest among its
referrers (the referrers API, or the sha256-<hex> tag): a Sigstore bundle, as \`aegis-kit sign\`,
\`push --sign\` and \`cosign sign\` store it, whose DSSE signature verifies with PUB and whose
statement names the digest. Offline: no transparency log or certificate is consulted, only the
key. Exits 1 when no signature verifies, saying why each one found was refused.`

  static override examples = [
    {
      description: "Verify a kit against the publisher's public key",
      command: '<%= config.bin %> <%= command.id %> 127.0.0.1:5000/kits/hello:0.1.0 --key cosign.pub',
    },
  ]

  static override args = {
    ref: Args.string({description: 'What to verify: [registry/]repository[:tag][@sha256:<digest>].', required: true}),
  }

  static override flags = {
    ...registryFlags,
    key: Flags.string({description: 'Public key (PEM), e.g. cosign.pub.', required: true}),
  }

  static override enableJsonFlag = true

  async run(): Promise<VerifyReport> {
    const {args, flags} = await this.parse(Verify)
    const publicKey = await loadVerificationKey(flags.key)
    const repository = new RemoteRepository(args.ref, {plainHttp: flags['plain-http'], insecure: flags.insecure})
    const verified = await verifyRemote(repository, publicKey)
    this.log(`Verified ${verified.reference}: signed by ${flags.key} (signature ${verified.signature.digest})`)
    return {
      reference: verified.reference,
      digest: verified.subject.digest,
      signature: verified.signature.digest,
      key: keyHint(publicKey),
    }
  }
}
