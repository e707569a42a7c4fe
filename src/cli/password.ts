/** Reading a secret for `login`: from standard input only, so it never sits in argv or shell history. */
import {AegisError} from '../errors.js'

const MAX_PASSWORD_BYTES = 64 * 1024

/** The whole of `stdin` without its final line break; an AegisError when not asked for or empty. */
export async function readPassword(stdin: NodeJS.ReadStream, fromStdin: boolean | undefined): Promise<string> {
  if (!fromStdin) {
    throw new AegisError('Give the password on standard input with --password-stdin.', {
      hint: 'e.g. echo "$TOKEN" | aegis-kit login ghcr.io -u USER --password-stdin',
    })
  }
  if (stdin.isTTY) {
    throw new AegisError('--password-stdin reads a pipe or a file, not the terminal.', {
      hint: 'e.g. aegis-kit login ghcr.io -u USER --password-stdin < token.txt',
    })
  }
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of stdin) {
    const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk))
    size += buffer.length
    if (size > MAX_PASSWORD_BYTES) throw new AegisError('Standard input is too long to be a password or token.')
    chunks.push(buffer)
  }
  const password = Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '')
  if (password === '')
    throw new AegisError('No password on standard input.', {hint: 'pipe the password or token into the command'})
  return password
}
