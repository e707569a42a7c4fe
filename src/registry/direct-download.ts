/**
 * A large blob downloaded straight into the store's temp file: blob-download.cjs sends the GET,
 * hashes the body and writes the file as it arrives, with no stream between the socket and the
 * disk. The store still decides: it renames the temp file into place only when the size and
 * digest measured here match.
 */
import {AegisError} from '../errors.js'
import {errorCode} from '../fs-util.js'
import {download} from './blob-download.cjs'
import {TOO_MANY_REDIRECTS} from './http-core.cjs'
import {deadlineError, deadlineFor, registryTimeouts, type RegistryRequest} from './http.js'

export interface DownloadJob {
  request: RegistryRequest
  tempPath: string
  /** The expected size: reading stops one byte after it. */
  size: number
  /** The expected digest: only a match is fsynced (the store checks again before keeping it). */
  digest: string
}

/** `filled`: the temp file holds what the registry sent (to be verified); `status`: the answer was not a 200 and nothing was written. */
export type DownloadOutcome = Awaited<ReturnType<typeof download>>

/** Downloads `job.request` into `job.tempPath`; `onBytes` hears of the bytes as they arrive. */
export async function downloadDirect(job: DownloadJob, onBytes: (bytes: number) => void): Promise<DownloadOutcome> {
  const {request, tempPath, size, digest} = job
  const timeouts = registryTimeouts()
  const deadlineMs = deadlineFor(size, timeouts)
  try {
    return await download(
      {
        url: request.url.href,
        headers: request.headers ?? {},
        insecure: request.insecure === true,
        tempPath,
        size,
        digest,
        idleMs: timeouts.idleMs,
        deadlineMs,
      },
      onBytes,
    )
  } catch (error) {
    const code = errorCode(error)
    if (code === 'EDEADLINE') throw deadlineError('GET', request.url, deadlineMs)
    // The error http.ts throws for the same chain: not retried, and not asked again by http.ts.
    if (code === TOO_MANY_REDIRECTS) throw new AegisError((error as Error).message)
    throw error
  }
}
