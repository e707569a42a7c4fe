/**
 * The registry client: references, retrying and authenticating HTTP, remote repositories as
 * ContentStores, and graph copy between any two stores.
 */
export {RegistryError, redactUrl, transferFailed, RESUME_HINT} from './registry-error.js'
export {DEFAULT_RETRY_POLICY, parseRetryAfter, type RetryPolicy} from './retry.js'
export {DockerCredentials, configKey, type Credential, type CredentialSource} from './credentials.js'
export {RegistryClient, parseChallenges, type Challenge, type RegistryClientOptions} from './auth.js'
export {RemoteRepository, defaultRegistryClient, type RemoteRepositoryOptions} from './repository.js'
export {
  copyGraph,
  fetchManifest,
  resolvePlatform,
  type CopyOptions,
  type CopyProgress,
  type CopyResult,
  type CopyTotals,
} from './copy.js'
export {pushImage, pullImage, type PushOptions, type PullOptions, type TransferResult} from './push-pull.js'
export {parsePlatform, formatPlatform, isManifest, isIndex} from '../oci/manifest.js'
export {VerifyingStream, verifying, sha256Digest} from './verify.js'
export {parseRegistryHost, verifyLogin, type RegistryHost} from './login.js'
