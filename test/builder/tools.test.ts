/**
 * The one process runner (src/exec.ts) under the build's tools (src/builder/tools.ts): lines
 * streamed as they come, the interleaved tail of a failure, a missing program, cancellation.
 */
import {describe, expect, it} from 'vitest'
import {runTool} from '../../src/builder/tools.js'
import {AegisError} from '../../src/errors.js'
import {execFileText} from '../../src/exec.js'

describe('execFileText', () => {
  it('streams whole lines, a line and a character split across writes included', async () => {
    const lines: string[] = []
    // "grüße" is cut inside its ü: the two bytes arrive in separate chunks.
    const script =
      "process.stdout.write('one\\ntw'); setTimeout(() => { process.stdout.write(Buffer.from('o\\ngr\\xc3', 'latin1')); setTimeout(() => process.stdout.write(Buffer.from('\\xbc\\xc3\\x9fe\\r\\nlast', 'latin1')), 50) }, 50)"
    const result = await execFileText(process.execPath, ['-e', script], {onLine: (line) => lines.push(line)})
    expect(lines).toEqual(['one', 'two', 'grüße', 'last'])
    expect(result.stdout).toBe('one\ntwo\ngrüße\r\nlast')
    expect(result.exitCode).toBe(0)
  })

  it('keeps stdout and stderr interleaved in `all` when asked', async () => {
    const script =
      "process.stdout.write('a\\n'); setTimeout(() => { process.stderr.write('b\\n'); setTimeout(() => process.stdout.write('c\\n'), 50) }, 50)"
    const result = await execFileText(process.execPath, ['-e', script], {all: true})
    expect(result.all).toBe('a\nb\nc')
    expect(result.stdout).toBe('a\nc')
    expect(result.stderr).toBe('b')
  })

  it('ends the program when the signal is aborted, and says it was canceled', async () => {
    const controller = new AbortController()
    const started = Date.now()
    const running = execFileText(process.execPath, ['-e', "console.log('up'); setTimeout(() => {}, 60_000)"], {
      signal: controller.signal,
      onLine: () => controller.abort(),
    })
    const result = await running
    expect(result.canceled).toBe(true)
    expect(result.signal).toBe('SIGTERM')
    expect(Date.now() - started).toBeLessThan(10_000)
    const already = await execFileText(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], {
      signal: AbortSignal.abort(),
      killSignal: 'SIGKILL',
    })
    expect(already).toMatchObject({canceled: true, signal: 'SIGKILL'})
  })

  it('sends SIGKILL when the program outlives its kill signal by 5 s', async () => {
    const controller = new AbortController()
    const result = await execFileText(
      process.execPath,
      ['-e', "process.on('SIGTERM', () => {}); console.log('up'); setTimeout(() => {}, 60_000)"],
      {
        signal: controller.signal,
        onLine: () => controller.abort(),
      },
    )
    expect(result).toMatchObject({canceled: true, signal: 'SIGKILL'})
  }, 15_000)
})

describe('runTool', () => {
  it('returns stdout and hands non-blank lines of both streams to onLine', async () => {
    const lines: string[] = []
    const out = await runTool(
      process.execPath,
      ['-e', "console.log('out'); console.error('err'); console.log('   ')"],
      {onLine: (line) => lines.push(line)},
    )
    expect(out).toBe('out\n   ')
    expect(lines.sort()).toEqual(['err', 'out'])
  })

  it('adds the given environment to ours', async () => {
    const out = await runTool(
      process.execPath,
      ['-e', 'console.log(process.env.AEGIS_TOOL_TEST, typeof process.env.PATH)'],
      {env: {AEGIS_TOOL_TEST: 'set'}},
    )
    expect(out).toBe('set string')
  })

  it('says a missing program is not installed, with the hint', async () => {
    const error = await runTool('aegis-no-such-tool', [], {hint: 'install it'}).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(AegisError)
    expect((error as AegisError).message).toBe('aegis-no-such-tool is not installed')
    expect((error as AegisError).hint).toBe('install it; run `aegis-kit doctor` to check the rest')
  })

  it('names the exit code and the last lines of both streams when the program fails', async () => {
    // Apart in time: two pipes written at once may be read in either order.
    const script =
      "let i = 0; const next = () => { i++; (i % 2 ? console.log : console.error)('line ' + i); if (i === 8) process.exitCode = 3; else setTimeout(next, 40) }; next()"
    const error = await runTool(process.execPath, ['-e', script]).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(AegisError)
    expect((error as Error).message).toBe(
      `${process.execPath} failed (exit 3):\n  line 3\n  line 4\n  line 5\n  line 6\n  line 7\n  line 8`,
    )
  })

  it('says the program was interrupted when the signal is aborted', async () => {
    const controller = new AbortController()
    const error = await runTool(process.execPath, ['-e', "console.log('up'); setTimeout(() => {}, 60_000)"], {
      signal: controller.signal,
      onLine: () => controller.abort(),
    }).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect((error as Error).message).toBe(`${process.execPath} was interrupted`)
  })
})
