// Live ledger events over Server-Sent Events (`GET /v1/events`). The browser's EventSource
// reconnects by itself and resumes with Last-Event-ID, so nothing is missed across drops.

const NAMES = [
  'flowchart:run:updated',
  'flowchart:node:updated',
  'flowchart:node_artifact:persisted',
  'flowchart:routing:decided',
  'flowchart:tool:called',
  'flowchart:definition:created',
  'ledger:event:appended',
];

/** Subscribes to live events (of one run when `runId` is given); returns a function that stops.
 *  `onOpen` runs on every (re)connection: a tail without a cursor starts at the ledger's end, so
 *  whatever was appended between the page's first read and the connection is only caught by
 *  reading again then. */
export function subscribe({ runId, onOpen } = {}, onEvent) {
  const url = runId ? `/v1/events?run_id=${encodeURIComponent(runId)}` : '/v1/events';
  const source = new EventSource(url);
  const handler = (message) => {
    let data = null;
    try { data = JSON.parse(message.data); } catch { return; }
    onEvent(data);
  };
  for (const name of NAMES) source.addEventListener(name, handler);
  if (onOpen) source.addEventListener('open', () => onOpen());
  return () => source.close();
}
