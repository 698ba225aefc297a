// Outbox: what sandbox connections and test runs would have sent (GET /v1/outbox).

import { api } from './api.js';
import { h, heading, replace } from './dom.js';
import { outboxList } from './runs.js';

/** #/outbox. */
export async function render(main) {
  const { messages } = await api('GET', '/v1/outbox?limit=200');
  replace(main, heading('Outbox'), h('p', { class: 'muted' }, 'Messages that sandbox connections and test runs would have sent, oldest first. Nothing here reached anyone.'), outboxList(messages));
}
