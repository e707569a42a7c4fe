/**
 * Runs one hook in its own Node process (started by run-hook.ts). Contract: a JSON request on
 * stdin ({module, hook, args}); exactly one JSON line on stdout: {"result": …} or
 * {"error": {…}}. The hook's console output goes to stderr so it cannot corrupt the reply.
 */
import {pathToFileURL} from 'node:url'

interface Request {
  module: string
  hook: string
  args: unknown[]
}

const reply = (body: unknown): void => {
  process.stdout.write(`${JSON.stringify(body)}\n`, () => process.exit(0))
}

const chunks: Buffer[] = []
for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
const request = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Request

for (const method of ['log', 'info', 'debug'] as const) console[method] = console.error

try {
  const module = (await import(pathToFileURL(request.module).href)) as Record<string, unknown>
  const camel = request.hook.replace(/_([a-z])/g, (_, letter: string) => letter.toUpperCase())
  const hook = [module[request.hook], module[camel], module.default].find(
    (candidate) => typeof candidate === 'function',
  )
  if (typeof hook !== 'function') {
    reply({
      error: {kind: 'no-export', message: `exports no function ${request.hook} (nor ${camel} or a default export)`},
    })
  } else {
    const result: unknown = await (hook as (...args: unknown[]) => unknown)(...request.args)
    let line: string | undefined
    try {
      line = result === undefined ? undefined : JSON.stringify({result})
    } catch (error) {
      reply({
        error: {
          kind: 'not-json',
          message: `returned a value that is not JSON (${error instanceof Error ? error.message : String(error)})`,
        },
      })
    }
    if (result === undefined) reply({error: {kind: 'no-result', message: 'returned nothing'}})
    else if (line !== undefined) process.stdout.write(`${line}\n`, () => process.exit(0))
  }
} catch (error) {
  const message = error instanceof Error ? error.message : String(error)
  const stack = error instanceof Error ? error.stack : undefined
  reply({error: {kind: 'threw', message, stack}})
}
