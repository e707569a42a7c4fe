/** Flags several commands share. */
import {Flags} from '@oclif/core'

/** How to reach a registry: `images push`, `images pull`, `login`. */
export const registryFlags = {
  'plain-http': Flags.boolean({
    description: 'Talk plain HTTP to the registry (the default for localhost and 127.0.0.1).',
  }),
  insecure: Flags.boolean({
    description:
      'Allow an insecure registry: HTTPS without certificate checks, else plain HTTP (as docker and skopeo --tls-verify=false).',
  }),
}
