/** A small typed event emitter (no dependency on Node's `events` or the DOM's EventTarget). */
export type Listener<T> = (value: T) => void

export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>()

  /** Calls `listener` for every `type` event; returns this, for chaining. */
  on<K extends keyof Events>(type: K, listener: Listener<Events[K]>): this {
    let set = this.listeners.get(type)
    if (set === undefined) { set = new Set(); this.listeners.set(type, set) }
    set.add(listener as Listener<never>)
    return this
  }

  /** Calls `listener` for the next `type` event only. */
  once<K extends keyof Events>(type: K, listener: Listener<Events[K]>): this {
    const wrapper: Listener<Events[K]> = (value) => { this.off(type, wrapper); listener(value) }
    return this.on(type, wrapper)
  }

  off<K extends keyof Events>(type: K, listener: Listener<Events[K]>): this {
    this.listeners.get(type)?.delete(listener as Listener<never>)
    return this
  }

  /**
   * Calls the listeners in order. A listener that throws does not stop the others, nor the client's own
   * processing (which would break the exactly-once bookkeeping): its error is rethrown asynchronously.
   */
  protected emit<K extends keyof Events>(type: K, value: Events[K]): void {
    const set = this.listeners.get(type)
    if (set === undefined) return
    for (const listener of [...set]) {
      try {
        (listener as Listener<Events[K]>)(value)
      } catch (err) {
        queueMicrotask(() => { throw err })
      }
    }
  }

  protected listenerCount (type: keyof Events): number { return this.listeners.get(type)?.size ?? 0 }
}
