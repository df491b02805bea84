// The Agent view: a chat with the coding agent that works in this session's VM. Text streams in
// as the model writes it (`agent_text` events), each tool call is a collapsible row with its
// arguments and, once done, its result; Stop cancels the run. The conversation is loaded from
// the server (`/agent/messages`), so a reload shows the history; a follow-up prompt continues it.

import { call, json, SessionEvent } from '../lib/api';
import { h, icon } from '../lib/dom';
import { sectionHeader } from './layout';

type Message =
  | { role: 'user'; text: string }
  | { role: 'assistant'; text: string; tool_calls?: { id: string; name: string; arguments: string }[] }
  | { role: 'tool'; call_id: string; name: string; content: string; is_error: boolean };

interface Run {
  id: string;
  status: 'running' | 'succeeded' | 'failed' | 'cancelled' | 'interrupted';
  reason?: string;
  summary?: string;
}

export interface AgentHooks {
  /** Shows the agent's terminal (where its shell commands run) as a tab. */
  terminal(): void;
  /** The agent wrote these files: open editors follow them. */
  wrote(paths: string[]): void;
}

const base = (sid: string) => `/api/v1/sessions/${encodeURIComponent(sid)}/agent`;
/** Characters of a tool result shown before "show more". */
const RESULT_PREVIEW = 2000;

export class AgentView {
  readonly el: HTMLElement;
  private readonly log = h('div', { class: 'agent-log', role: 'log', 'aria-live': 'polite' });
  private readonly input = h('textarea', { class: 'agent-input', rows: 3, placeholder: 'Ask the agent… (Enter to send, Shift+Enter for a new line)' }) as HTMLTextAreaElement;
  private readonly send = h('button', { class: 'btn', id: 'agent-send' }, 'Send') as HTMLButtonElement;
  private readonly stopBtn = h('button', { class: 'btn secondary', id: 'agent-stop', hidden: true }, icon('debug-stop'), ' Stop') as HTMLButtonElement;
  private readonly statusLine = h('div', { class: 'agent-status' });
  private running?: string;
  /** The assistant bubble text is streaming into, per run. */
  private streaming?: HTMLElement;
  private readonly calls = new Map<string, HTMLDetailsElement>();
  private loaded = false;

  constructor(
    private readonly sid: string,
    private readonly hooks: AgentHooks,
  ) {
    this.el = h(
      'div',
      { class: 'agent-view' },
      sectionHeader('Agent', []),
      this.log,
      h('div', { class: 'agent-compose' }, this.input, h('div', { class: 'agent-actions' }, this.statusLine, this.stopBtn, this.send)),
    );
    this.send.addEventListener('click', () => void this.submit());
    this.stopBtn.addEventListener('click', () => void this.stop());
    this.input.addEventListener('keydown', (e: KeyboardEvent) => {
      if (e.key === 'Enter' && !e.shiftKey) {
        e.preventDefault();
        void this.submit();
      }
    });
  }

  /** Loads the stored conversation and any run in progress (once). */
  async load(): Promise<void> {
    if (this.loaded) return;
    this.loaded = true;
    try {
      const [messages, runs] = await Promise.all([json<Message[]>('GET', `${base(this.sid)}/messages`), json<Run[]>('GET', `${base(this.sid)}/runs`)]);
      for (const m of messages) this.replay(m);
      const live = runs.find((r) => r.status === 'running');
      if (live) this.setRunning(live.id);
    } catch (e) {
      this.notice(`Cannot load the conversation: ${(e as Error).message}`, true);
    }
  }

  /**
   * After the event stream reconnected (a server restart, a network drop): a run this view
   * showed as running may have ended meanwhile (`interrupted` when the server stopped), and its
   * final event was missed. Ask for it and show its end.
   */
  async resync(): Promise<void> {
    const id = this.running;
    if (!id) return;
    try {
      const run = await json<Run>('GET', `${base(this.sid)}/runs/${encodeURIComponent(id)}`);
      if (run.status !== 'running' && this.running === id) {
        this.event({ type: 'agent_status', session: this.sid, run: id, status: run.status, reason: run.reason, summary: run.summary });
      }
    } catch {
      // The next reconnect tries again.
    }
  }

  private replay(m: Message): void {
    if (m.role === 'user') this.bubble('user', m.text);
    else if (m.role === 'assistant') {
      if (m.text) this.bubble('assistant', m.text);
      for (const c of m.tool_calls ?? []) this.toolCall(c.id, c.name, c.arguments);
    } else this.toolResult(m.call_id, m.content, m.is_error);
  }

  private async submit(): Promise<void> {
    const prompt = this.input.value.trim();
    if (!prompt || this.running) return;
    this.send.disabled = true;
    try {
      const run = await json<Run>('POST', `${base(this.sid)}/runs`, { body: { prompt } });
      this.input.value = '';
      this.bubble('user', prompt);
      this.setRunning(run.id);
      this.hooks.terminal();
    } catch (e) {
      this.notice((e as Error).message, true);
    } finally {
      this.send.disabled = !!this.running;
    }
  }

  private async stop(): Promise<void> {
    if (!this.running) return;
    this.stopBtn.disabled = true;
    this.statusLine.textContent = 'Stopping…';
    try {
      await call('POST', `${base(this.sid)}/runs/${encodeURIComponent(this.running)}/cancel`);
    } catch (e) {
      this.notice(`Cannot stop the run: ${(e as Error).message}`, true);
    } finally {
      this.stopBtn.disabled = false;
    }
  }

  private setRunning(run: string | undefined): void {
    this.running = run;
    this.stopBtn.hidden = !run;
    this.send.disabled = !!run;
    this.statusLine.textContent = run ? 'Working…' : '';
    this.el.classList.toggle('running', !!run);
    if (!run) this.streaming = undefined;
  }

  /** An `agent_*` event of this session. */
  event(ev: SessionEvent): void {
    switch (ev.type) {
      case 'agent_status':
        if (ev.status === 'running') {
          if (this.running !== ev.run) this.setRunning(ev.run);
          return;
        }
        if (this.running === ev.run || !this.running) this.setRunning(undefined);
        this.notice(
          ev.status === 'succeeded' ? `Done${ev.summary ? `: ${ev.summary}` : '.'}` : `Run ${ev.status}${ev.reason ? `: ${ev.reason}` : '.'}`,
          ev.status === 'failed',
          `run-${ev.status}`,
        );
        return;
      case 'agent_text':
        if (!this.streaming) this.streaming = this.bubble('assistant', '');
        this.streaming.textContent += ev.delta;
        this.scroll();
        return;
      case 'agent_tool_call':
        this.streaming = undefined; // text after a tool call is a new bubble
        this.toolCall(ev.call_id, ev.name, ev.arguments);
        return;
      case 'agent_tool_result':
        this.toolResult(ev.call_id, ev.output, ev.is_error);
        if (ev.paths?.length) this.hooks.wrote(ev.paths);
        return;
      case 'agent_retry':
        this.notice(`Model request failed (${ev.reason}); retrying in ${Math.round(ev.delay_ms / 100) / 10} s`, false);
        return;
    }
  }

  private bubble(who: 'user' | 'assistant', text: string): HTMLElement {
    const body = h('div', { class: 'agent-text' }, text);
    this.log.append(h('div', { class: `agent-msg ${who}` }, h('div', { class: 'agent-who' }, who === 'user' ? 'You' : 'Agent'), body));
    this.scroll();
    return body;
  }

  private toolCall(id: string, name: string, args: string): void {
    let pretty = args;
    try {
      pretty = JSON.stringify(JSON.parse(args), null, 2);
    } catch {
      // shown as the model wrote it
    }
    const row = h(
      'details',
      { class: 'agent-tool pending', 'data-call': id, 'data-tool': name },
      h('summary', {}, icon('tools'), h('span', { class: 'tool-name' }, name), h('span', { class: 'tool-brief' }, brief(name, args))),
      h('pre', { class: 'tool-args' }, pretty),
    ) as HTMLDetailsElement;
    this.calls.set(id, row);
    this.log.append(row);
    this.scroll();
  }

  private toolResult(id: string, output: string, isError: boolean): void {
    const row = this.calls.get(id);
    if (!row) return;
    row.classList.remove('pending');
    row.classList.toggle('error', isError);
    const shown = output.length > RESULT_PREVIEW ? `${output.slice(0, RESULT_PREVIEW)}\n… (${output.length - RESULT_PREVIEW} more characters)` : output;
    row.append(h('pre', { class: 'tool-result' }, shown));
  }

  private notice(text: string, error: boolean, cls = ''): void {
    this.log.append(h('div', { class: `agent-notice ${error ? 'error' : ''} ${cls}` }, text));
    this.scroll();
  }

  private scroll(): void {
    this.log.scrollTop = this.log.scrollHeight;
  }

  focus(): void {
    this.input.focus();
  }

  /** The session ended: nothing more can be sent. */
  end(): void {
    this.setRunning(undefined);
    this.input.disabled = this.send.disabled = true;
  }
}

/** One line about a call, from its arguments (`path`, `cmd`…). */
function brief(name: string, args: string): string {
  try {
    const a = JSON.parse(args) as Record<string, unknown>;
    const v = a.command ?? a.cmd ?? a.path ?? a.url ?? a.pattern ?? a.summary;
    return typeof v === 'string' ? v.split('\n')[0].slice(0, 80) : '';
  } catch {
    return name === 'finish' ? '' : '(malformed arguments)';
  }
}
