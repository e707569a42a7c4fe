// The undo stack startVm and startInstance clean up with: reverse order, once, every undo run.
import {describe, expect, it} from 'vitest'

import {settleAll, UndoStack} from '../src/undo-stack.js'

describe('UndoStack', () => {
  it('runs the undos last added first, once, with the reason', async () => {
    const undo = new UndoStack()
    const ran: string[] = []
    undo.defer((reason) => ran.push(`first ${String(reason)}`))
    undo.defer(async () => {
      await new Promise((resolve) => setTimeout(resolve, 5))
      ran.push('second')
    })
    await Promise.all([undo.unwind('why'), undo.unwind('again')])
    expect(ran).toEqual(['second', 'first why'])
    expect(() => undo.defer(() => undefined)).toThrow(/after it was unwound/)
  })

  it('runs every undo when one fails, then throws the first failure', async () => {
    const undo = new UndoStack()
    const ran: string[] = []
    undo.defer(() => ran.push('first'))
    undo.defer(() => {
      throw new Error('second failed')
    })
    undo.defer(() => {
      throw new Error('third failed')
    })
    await expect(undo.unwind()).rejects.toThrow('third failed')
    expect(ran).toEqual(['first'])
  })

  it('failWith unwinds, then throws the error that stopped the start', async () => {
    const undo = new UndoStack()
    let reason: unknown
    undo.defer((why) => {
      reason = why
    })
    const error = new Error('boot failed')
    await expect(undo.failWith(error)).rejects.toBe(error)
    expect(reason).toBe(error)
  })
})

describe('settleAll', () => {
  it('waits for every promise, then throws the first failure in order', async () => {
    let slowDone = false
    const slow = new Promise<void>((resolve) =>
      setTimeout(() => {
        slowDone = true
        resolve()
      }, 20),
    )
    await expect(
      settleAll([Promise.reject(new Error('first')), slow, Promise.reject(new Error('second'))]),
    ).rejects.toThrow('first')
    expect(slowDone).toBe(true)
    expect(await settleAll([Promise.resolve(1), 'two'])).toEqual([1, 'two'])
  })
})
