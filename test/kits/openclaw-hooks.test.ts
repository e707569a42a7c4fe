// The OpenClaw kit's hooks against the real OpenClaw: what render_env writes is accepted by
// `openclaw config validate`, feeds provider keys the way OpenClaw reads them, and starts the
// real gateway; no secret value is ever printed or written into the workspace.
import {mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {execa} from 'execa'
import {beforeAll, describe, expect, it} from 'vitest'
import {buildAppContext, onPublish, renderEnv} from '../../dist/hooks/operations.js'
import {loadKit} from '../../dist/kit/kit.js'
import {hasStackTrace, runCli} from '../helpers/cli.js'
import {freePort} from '../helpers/registry.js'
import {OPENCLAW_VERSION, openclawInstall} from '../helpers/toolchain.js'
import type {Attempt, Outcome} from './openclaw-control-ui-connect.js'

/** The Control UI's WebSocket handshake, run by OpenClaw's Node 24 (Node 20 has no WebSocket). */
const controlUiConnect = fileURLToPath(new URL('openclaw-control-ui-connect.ts', import.meta.url))

const ANTHROPIC = 'sk-ant-api03-KNOWNSECRETVALUE-abcdefghijklmnop'
const TELEGRAM = '123456789:AAKNOWNTELEGRAMTOKEN-abcdefghijklmno'

let openclawEnv: Record<string, string>

beforeAll(async () => {
  openclawEnv = (await openclawInstall()).env
}, 600_000)

/**
 * Runs the real OpenClaw CLI with only the environment given: OpenClaw goes quiet when it sees a
 * test runner's variables (VITEST, NODE_ENV=test), so none of ours may leak in.
 */
function openclaw(args: string[], env: Record<string, string>, timeout = 120_000) {
  return execa('openclaw', args, {env: {LANG: 'C.UTF-8', ...env}, extendEnv: false, reject: false, timeout})
}

/** Points OpenClaw at a rendered tree (written by --output) the way the instance does. */
function stateEnv(outputDir: string): Record<string, string> {
  return {
    ...openclawEnv,
    HOME: path.join(outputDir, 'workspace'),
    OPENCLAW_STATE_DIR: path.join(outputDir, 'workspace/.openclaw'),
    OPENCLAW_CONFIG_PATH: path.join(outputDir, 'workspace/.openclaw/openclaw.json'),
  }
}

describe('openclaw render_env', () => {
  it('never prints the secret, in text or JSON, and writes it nowhere', async () => {
    const output = mkdtempSync(path.join(tmpdir(), 'aegis-kit-render-'))
    const text = await runCli(
      ['hooks', 'render-env', 'openclaw', '--secret', 'ANTHROPIC_API_KEY', '--output', output],
      {env: {ANTHROPIC_API_KEY: ANTHROPIC}},
    )
    expect(text.exitCode).toBe(0)
    expect(text.stdout).toMatch(/ANTHROPIC_API_KEY=\*\*\*\*/)
    expect(text.stdout).toMatch(/OPENCLAW_GATEWAY_TOKEN=\*\*\*\*/)
    expect(text.stdout).toContain('NODE_OPTIONS=--max-old-space-size=1536')
    expect(text.all).not.toContain(ANTHROPIC)
    const json = await runCli(['hooks', 'render-env', 'openclaw', '--secret', 'ANTHROPIC_API_KEY', '--json'], {
      env: {ANTHROPIC_API_KEY: ANTHROPIC},
    })
    expect(json.exitCode).toBe(0)
    expect(json.all).not.toContain(ANTHROPIC)
    const rendered = JSON.parse(json.stdout) as {
      env: Record<string, string>
      files: Array<{path: string; content: string}>
    }
    expect(rendered.env.OPENCLAW_CONFIG_PATH).toBe('/workspace/.openclaw/openclaw.json')
    expect(rendered.files.map((file) => file.path)).toEqual(['/workspace/.openclaw/openclaw.json'])
    const config = readFileSync(path.join(output, 'workspace/.openclaw/openclaw.json'), 'utf8')
    // nowhere in the whole rendered tree, not only the config
    const written = readdirSync(output, {recursive: true})
      .map(String)
      .filter((entry) => statSync(path.join(output, entry)).isFile())
    expect(written).toContain('workspace/.openclaw/openclaw.json')
    for (const entry of written) expect(readFileSync(path.join(output, entry), 'utf8'), entry).not.toContain(ANTHROPIC)
    expect(statSync(path.join(output, 'workspace/.openclaw/openclaw.json')).mode & 0o777).toBe(0o600)
    expect(JSON.parse(config).gateway).toMatchObject({
      mode: 'local',
      port: 18789,
      bind: 'lan',
      auth: {mode: 'token', token: {source: 'env', id: 'OPENCLAW_GATEWAY_TOKEN'}},
    })
  })

  it('NODE_OPTIONS follows the profile memory', async () => {
    const result = await runCli(['hooks', 'render-env', 'openclaw', '--profile', 'bot', '--json'])
    expect(result.exitCode).toBe(0)
    expect(JSON.parse(result.stdout).env.NODE_OPTIONS).toBe('--max-old-space-size=768')
  })

  it('the rendered openclaw.json passes `openclaw config validate` and OpenClaw reads the key from the environment', async () => {
    const output = mkdtempSync(path.join(tmpdir(), 'aegis-kit-render-'))
    const rendered = await runCli(
      ['hooks', 'render-env', 'openclaw', '--secret', 'ANTHROPIC_API_KEY', '--output', output],
      {env: {ANTHROPIC_API_KEY: ANTHROPIC}},
    )
    expect(rendered.exitCode).toBe(0)
    const env = {...stateEnv(output), ANTHROPIC_API_KEY: ANTHROPIC, OPENCLAW_GATEWAY_TOKEN: 'test-token-value'}
    const validate = await openclaw(['config', 'validate'], env)
    expect(validate.stdout + validate.stderr).toMatch(/Config valid/)
    expect(validate.exitCode).toBe(0)
    const status = await openclaw(['models', 'status', '--json'], env)
    const report = JSON.parse(status.stdout) as {
      auth: {providers: Array<{provider: string; effective: {kind: string}}>}
    }
    expect(report.auth.providers.find((provider) => provider.provider === 'anthropic')?.effective.kind).toBe('env')
  }, 180_000)

  it('Telegram: polling with a token, webhook when a URL is configured; both valid for OpenClaw', async () => {
    const polling = mkdtempSync(path.join(tmpdir(), 'aegis-kit-render-'))
    const first = await runCli(
      ['hooks', 'render-env', 'openclaw', '--profile', 'bot', '--secret', 'TELEGRAM_BOT_TOKEN', '--output', polling],
      {env: {TELEGRAM_BOT_TOKEN: TELEGRAM}},
    )
    expect(first.exitCode).toBe(0)
    expect(first.all).not.toContain(TELEGRAM)
    const pollingConfig = JSON.parse(readFileSync(path.join(polling, 'workspace/.openclaw/openclaw.json'), 'utf8'))
    expect(pollingConfig.channels.telegram).toEqual({
      enabled: true,
      botToken: {source: 'env', provider: 'default', id: 'TELEGRAM_BOT_TOKEN'},
    })

    const webhook = mkdtempSync(path.join(tmpdir(), 'aegis-kit-render-'))
    const userConfig = path.join(webhook, 'user.json')
    writeFileSync(
      userConfig,
      JSON.stringify({channels: {telegram: {webhookUrl: 'https://bot.example.com/telegram-webhook'}}}),
    )
    const second = await runCli(
      [
        'hooks',
        'render-env',
        'openclaw',
        '--profile',
        'bot',
        '--secret',
        'TELEGRAM_BOT_TOKEN',
        '--config',
        userConfig,
        '--output',
        webhook,
      ],
      {env: {TELEGRAM_BOT_TOKEN: TELEGRAM}},
    )
    expect(second.exitCode).toBe(0)
    const webhookConfig = JSON.parse(readFileSync(path.join(webhook, 'workspace/.openclaw/openclaw.json'), 'utf8'))
    expect(webhookConfig.channels.telegram).toMatchObject({
      webhookUrl: 'https://bot.example.com/telegram-webhook',
      webhookSecret: {source: 'env', id: 'TELEGRAM_WEBHOOK_SECRET'},
    })

    for (const dir of [polling, webhook]) {
      const validate = await openclaw(['config', 'validate'], {
        ...stateEnv(dir),
        TELEGRAM_BOT_TOKEN: TELEGRAM,
        TELEGRAM_WEBHOOK_SECRET: 'x'.repeat(32),
        OPENCLAW_GATEWAY_TOKEN: 't',
      })
      expect(validate.stdout + validate.stderr, dir).toMatch(/Config valid/)
      expect(validate.exitCode, dir).toBe(0)
    }
  }, 180_000)

  it('the real gateway starts from what render_env renders and enforces the generated token', async () => {
    const token = 'gateway-token-0123456789abcdef'
    const kit = await loadKit('openclaw')
    const port = await freePort()
    // as under `run --expose 8080:PORT`: the browser's origin is the host side, which OpenClaw
    // would not seed by itself (it allows only its own port's origins)
    const app = buildAppContext(kit, {config: {gateway: {port}}, published: [{guestPort: port, hostPort: 8080}]})
    const rendered = await renderEnv(kit, app, {OPENCLAW_GATEWAY_TOKEN: token})
    const gatewayConfig = JSON.parse(rendered.files[0]?.content ?? '{}').gateway
    expect(gatewayConfig.controlUi.allowedOrigins).toEqual([
      `http://localhost:${port}`,
      `http://127.0.0.1:${port}`,
      'http://localhost:8080',
      'http://127.0.0.1:8080',
    ])
    const root = mkdtempSync(path.join(tmpdir(), 'aegis-kit-gateway-'))
    for (const file of rendered.files) {
      const target = path.join(root, file.path)
      await execa('mkdir', ['-p', path.dirname(target)])
      writeFileSync(target, file.content, {mode: file.mode})
    }
    const env = {...openclawEnv, ...rendered.env, ...stateEnv(root)}
    const gateway = execa('openclaw', ['gateway', '--allow-unconfigured'], {
      env: {LANG: 'C.UTF-8', ...env},
      extendEnv: false,
      reject: false,
      all: true,
    })
    try {
      // about 20 s on an idle machine; far longer when other suites share its two cores
      let health: Response | undefined
      for (const deadline = Date.now() + 180_000; Date.now() < deadline && !health?.ok; ) {
        await new Promise((resolve) => setTimeout(resolve, 500))
        health = await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined)
      }
      expect(health?.status).toBe(200)
      const page = await fetch(`http://127.0.0.1:${port}/`)
      expect(page.status).toBe(200)
      expect(await page.text()).toMatch(/<html/i)

      // An authenticated HTTP call: /tools/invoke takes the gateway token as a bearer token.
      const invoke = (authorization?: string) =>
        fetch(`http://127.0.0.1:${port}/tools/invoke`, {
          method: 'POST',
          headers: {'content-type': 'application/json', ...(authorization ? {authorization} : {})},
          body: JSON.stringify({tool: 'sessions_list', args: {}}),
        })
      for (const authorization of [undefined, 'Bearer wrong-token-0123456789abcdef', `Bearer ${token.slice(0, -1)}`]) {
        const refused = await invoke(authorization)
        expect(refused.status, String(authorization)).toBe(401)
        expect(await refused.json()).toEqual({error: {message: 'Unauthorized', type: 'unauthorized'}})
      }
      // /healthz answers before the startup sidecars are up; until then the gateway does accept
      // the token but answers sessions_list with a 500 ("sessions.list unavailable during gateway startup")
      let accepted = await invoke(`Bearer ${token}`)
      for (const deadline = Date.now() + 120_000; accepted.status === 500 && Date.now() < deadline; ) {
        await new Promise((resolve) => setTimeout(resolve, 500))
        accepted = await invoke(`Bearer ${token}`)
      }
      const answer = await accepted.json()
      expect(accepted.status, JSON.stringify(answer)).toBe(200)
      expect(answer).toMatchObject({ok: true, result: {details: {count: 0, sessions: []}}})

      // The Control UI's WebSocket handshake, from the published origin: refused without the token
      // and with a wrong one, hello-ok with the rendered one; another origin is refused even with it.
      const attempts: Attempt[] = [
        {origin: 'http://127.0.0.1:8080'},
        {origin: 'http://127.0.0.1:8080', token: 'wrong-token-0123456789abcdef'},
        {origin: 'http://127.0.0.1:8080', token},
        {origin: `http://localhost:${port}`, token},
        {origin: 'http://evil.example:8080', token},
      ]
      const connected = await execa(
        'node',
        [controlUiConnect, JSON.stringify({url: `ws://127.0.0.1:${port}/`, attempts})],
        {env: {LANG: 'C.UTF-8', ...openclawEnv}, extendEnv: false, timeout: 120_000},
      )
      const outcomes = connected.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Outcome)
      expect(outcomes).toMatchObject([
        {ok: false, code: 'AUTH_TOKEN_MISSING'},
        {ok: false, code: 'AUTH_TOKEN_MISMATCH'},
        {ok: true, helloType: 'hello-ok', serverVersion: OPENCLAW_VERSION},
        {ok: true, helloType: 'hello-ok', serverVersion: OPENCLAW_VERSION},
        {ok: false, code: 'CONTROL_UI_ORIGIN_NOT_ALLOWED'},
      ])
    } finally {
      gateway.kill('SIGTERM')
      await gateway
    }
    expect(gateway.all).not.toContain(token)
  }, 300_000)
})

describe('openclaw validate_config', () => {
  const cases: Array<{name: string; config: unknown; ok: boolean; problem?: RegExp}> = [
    {
      name: 'a good config',
      config: {gateway: {port: 18789, bind: 'lan', auth: {mode: 'token'}}, agents: {entries: {main: {role: 'coder'}}}},
      ok: true,
    },
    {
      name: 'a port the kit does not expose',
      config: {gateway: {port: 3000}},
      ok: false,
      problem: /gateway\.port: is 3000 but the kit exposes 18789/,
    },
    {
      name: 'a non-loopback bind without auth',
      config: {gateway: {bind: 'lan', auth: {mode: 'none'}}},
      ok: false,
      problem: /gateway\.auth\.mode: bind "lan" accepts connections from outside the VM/,
    },
    {
      name: 'a loopback bind behind the port proxy',
      config: {gateway: {bind: 'loopback'}},
      ok: false,
      problem: /gateway\.bind: is "loopback"/,
    },
    {
      name: 'an unknown agent role',
      config: {agents: {entries: {main: {role: 'hacker'}}}},
      ok: false,
      problem:
        /agents\.entries\.main\.role: "hacker" is not an agent role \(one of architect, coder, reviewer, tester, browser\)/,
    },
    {
      name: 'a literal token in the config',
      config: {gateway: {auth: {mode: 'token', token: 'plain-text'}}},
      ok: false,
      problem: /gateway\.auth\.token: a literal token/,
    },
    {
      name: 'an http webhook URL',
      config: {channels: {telegram: {webhookUrl: 'http://insecure.example.com/hook'}}},
      ok: false,
      problem: /webhookUrl: Telegram only calls https/,
    },
  ]
  for (const testCase of cases) {
    it(testCase.name, async () => {
      const file = path.join(mkdtempSync(path.join(tmpdir(), 'aegis-kit-config-')), 'openclaw.json')
      writeFileSync(file, JSON.stringify(testCase.config))
      const result = await runCli(['hooks', 'validate-config', 'openclaw', file])
      expect(result.exitCode).toBe(testCase.ok ? 0 : 1)
      if (testCase.ok) expect(result.stdout).toMatch(/ok for kit openclaw/)
      else expect(result.stderr).toMatch(testCase.problem!)
      expect(hasStackTrace(result.all)).toBe(false)
    })
  }

  it('reports JSON with --json', async () => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'aegis-kit-config-')), 'openclaw.yaml')
    writeFileSync(file, 'gateway:\n  port: 1\n')
    const result = await runCli(['hooks', 'validate-config', 'openclaw', file, '--json'])
    expect(result.exitCode).toBe(1)
    expect(JSON.parse(result.stdout)).toMatchObject({ok: false, problems: [{path: 'gateway.port'}]})
  })
})

describe('on_publish', () => {
  it('openclaw reports the release and its artifacts', async () => {
    const kit = await loadKit('openclaw')
    const app = buildAppContext(kit)
    const artifacts = [
      {kind: 'image', digest: `sha256:${'a'.repeat(64)}`, platform: 'linux/amd64', size: 1234},
      {kind: 'kit', digest: `sha256:${'b'.repeat(64)}`},
    ]
    const report = (await onPublish(kit, app, {reference: 'registry.example/openclaw:2026.9.6'}, artifacts)) as Record<
      string,
      unknown
    >
    expect(report).toMatchObject({
      kit: 'openclaw@2026.9.6',
      openclaw: '2026.9.6',
      node: '24.21.0',
      reference: 'registry.example/openclaw:2026.9.6',
    })
    expect(report.artifacts).toEqual([
      {kind: 'image', digest: `sha256:${'a'.repeat(64)}`, platform: 'linux/amd64', size: 1234},
      {kind: 'kit', digest: `sha256:${'b'.repeat(64)}`, platform: null, size: null},
    ])
  })
})

describe('hello render_env', () => {
  it('renders its title and a workspace file; the greeting secret is masked and written nowhere', async () => {
    const greeting = 'a-secret-greeting-value'
    const result = await runCli(['hooks', 'render-env', 'hello', '--secret', 'HELLO_GREETING=MY_GREETING', '--json'], {
      env: {MY_GREETING: greeting},
    })
    expect(result.exitCode).toBe(0)
    expect(result.all).not.toContain(greeting)
    const rendered = JSON.parse(result.stdout) as {
      env: Record<string, string>
      files: Array<{path: string; mode: string; secret: boolean; content: string}>
    }
    expect(rendered.env).toEqual({HELLO_TITLE: 'Hello from aegis-kit'})
    expect(rendered.files).toEqual([
      {
        path: '/workspace/hello.json',
        mode: '0644',
        secret: false,
        size: 49,
        content: '{"title":"Hello from aegis-kit","greeting":true}\n',
      },
    ])
  })
})
