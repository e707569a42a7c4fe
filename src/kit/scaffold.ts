/** `aegis-kit init`: a new kit directory that validates as written and shows every part of a kit. */
import {mkdir, readdir, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {AegisError} from '../errors.js'

const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/

export async function scaffoldKit(name: string, dir: string): Promise<string[]> {
  if (!NAME.test(name)) {
    throw new AegisError(`"${name}" is not a valid kit name`, {
      hint: 'use lower-case letters, digits and dashes (it becomes the image name), e.g. my-agent',
    })
  }
  const existing = await readdir(dir).catch(() => undefined)
  if (existing && existing.length > 0)
    throw new AegisError(`${dir} already exists and is not empty`, {
      hint: 'choose another directory with --dir, or remove it first',
    })
  const files: Record<string, string> = {
    'aegis-kit.yaml': manifest(name),
    'hooks/render_env.mjs': renderEnvHook,
    'hooks/validate_config.mjs': validateConfigHook,
    'app/server.mjs': server(name),
  }
  for (const [relative, content] of Object.entries(files)) {
    const target = path.join(dir, relative)
    await mkdir(path.dirname(target), {recursive: true})
    await writeFile(target, content)
  }
  return Object.keys(files)
}

const manifest = (name: string) => `# ${name}: an aegis-kit kit. Reference: docs/manifest.md in aegis-kit.
name: ${name}
version: 0.1.0
description: "What ${name} runs"

image:
  base:
    debian:
      suite: bookworm
      packages: [ca-certificates]
  node: 24.21.0
  files:
    - src: app
      dest: /opt/${name}
  env:
    NODE_ENV: production
  workdir: /workspace
  user: "1000:1000"
  command: [node, /opt/${name}/server.mjs]

secrets:
  required:
    - name: API_KEY
      description: An API key the workload uses (pass it with --secret API_KEY)
      scope: per_workspace
      user_provided: true
      optional: true

routing:
  expose:
    - port: 8080
      protocol: http
      ui: true

resources:
  memory: 512mb
  cpu: 1

hooks:
  render_env: hooks/render_env.mjs
  validate_config: hooks/validate_config.mjs

healthcheck:
  port: 8080
  path: /

config:
  greeting: hello
`

const renderEnvHook = `// render_env(app, secrets): the environment and files the instance gets. Runs in its own
// Node process; return JSON only. Secrets arrive here, never through the manifest.
export function render_env(app, secrets) {
  const env = {GREETING: String(app.config.greeting ?? 'hello'), PORT: '8080'}
  if (secrets.API_KEY) env.API_KEY = secrets.API_KEY
  return {env, files: []}
}
`

const validateConfigHook = `// validate_config(app_config, app): {ok, problems: [{path, message}]}.
export function validate_config(config) {
  const problems = []
  if (config.greeting !== undefined && typeof config.greeting !== 'string') {
    problems.push({path: 'greeting', message: 'must be a string'})
  }
  return {ok: problems.length === 0, problems}
}
`

const server = (name: string) => `// The workload: a tiny HTTP server. Replace it with your agent.
import {createServer} from 'node:http'

const port = Number(process.env.PORT ?? 8080)
createServer((request, response) => {
  response.writeHead(200, {'content-type': 'text/plain'})
  response.end(\`\${process.env.GREETING ?? 'hello'} from ${name}\\n\`)
}).listen(port, '0.0.0.0', () => console.log(\`${name} listening on \${port}\`))
`
