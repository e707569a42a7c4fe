import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {registryFlags} from '../cli/flags.js'
import {RemoteRepository} from '../registry/index.js'
import {PASSWORD_ENV, loadSigningKey, signRemote} from '../signing/index.js'

export interface SignReport {
  /** The signed manifest, `registry/repository@sha256:…`. */
  reference: string
  digest: string
  /** The signature manifest (a Sigstore bundle), a referrer of the signed one. */
  signature: string
}

export default class Sign extends BaseCommand {
  static override summary = 'Sign a kit or image in a registry, the way cosign does.'
  static override description =
    `Resolves REF to its manifest digest, signs that digest with KEY and stores the signature in
the same repository as cosign 3 does: a Sigstore bundle (DSSE, in-toto statement) as an OCI
referrer of the manifest, listed in the registry's referrers API or, on registries without it,
in the sha256-<hex> tag. \`aegis-kit verify\`, \`pull --verify\` and \`cosign verify --key\` check it.
KEY is cosign.key from \`cosign generate-key-pair\` (its password in ${PASSWORD_ENV}) or a PEM
ECDSA P-256 private key. No transparency log: signing works offline.`

  static override examples = [
    {
      description: 'Sign a pushed kit with a cosign key pair',
      command: `${PASSWORD_ENV}=… <%= config.bin %> <%= command.id %> 127.0.0.1:5000/kits/hello:0.1.0 --key cosign.key`,
    },
  ]

  static override args = {
    ref: Args.string({description: 'What to sign: [registry/]repository[:tag][@sha256:<digest>].', required: true}),
  }

  static override flags = {
    ...registryFlags,
    key: Flags.string({
      description: `Private key: cosign.key (password in ${PASSWORD_ENV}) or a PEM ECDSA P-256 key.`,
      required: true,
    }),
  }

  static override enableJsonFlag = true

  async run(): Promise<SignReport> {
    const {args, flags} = await this.parse(Sign)
    const key = await loadSigningKey(flags.key)
    const repository = new RemoteRepository(args.ref, {plainHttp: flags['plain-http'], insecure: flags.insecure})
    const signed = await signRemote(repository, key)
    this.log(`Signed ${signed.reference}: signature ${signed.signature.digest}`)
    return {reference: signed.reference, digest: signed.subject.digest, signature: signed.signature.digest}
  }
}
