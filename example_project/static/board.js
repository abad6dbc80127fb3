// The job board: one /api/board request per refresh (listings and counts, cached by the server
// and shared by every open tab), every refresh_seconds while the tab is visible, none while hidden.
const STATES = ['QUEUED', 'STARTED', 'SUCCESS', 'FAILURE'];
const older = {};    // state -> cursor stack while a column shows older pages (not refreshed)
const cursors = {};  // state -> cursor of the next older page
let timer = null, inFlight = false, refreshSeconds = 2;

function row(s, j) {
  const name = (j.task_name || '').replace('digits.', '');
  const tr = el('tr', {class: 'job', 'data-id': j.task_id}, el('td', {}, jobLink(j.task_id)));
  if (s === 'STARTED') {
    const p = j.progress;
    tr.append(el('td', {}, name), el('td', {}, ...(p ? [el('progress', {max: p.total, value: p.done}), ` ${p.done}/${p.total}`] : ['running'])));
  } else if (s === 'FAILURE') {
    tr.append(el('td', {class: 'err'}, j.error || ''));
  } else {
    tr.append(el('td', {}, name), el('td', {}, (j.updated_at || '').slice(11, 19)));
  }
  return tr;
}
function fill(s, page) {
  cursors[s] = page.next;
  show(document.getElementById('board-' + s), ...page.jobs.map(j => row(s, j)));
  document.querySelector(`[data-newest="${s}"]`).hidden = !older[s];
  document.querySelector(`[data-more="${s}"]`).hidden = !page.next;
}
async function refresh() {
  clearTimeout(timer);
  inFlight = true;
  try {
    const b = await (await fetch('/api/board')).json();
    refreshSeconds = b.refresh_seconds || refreshSeconds;
    for (const [k, v] of Object.entries(b.counts)) document.getElementById('count-' + k).textContent = v;
    for (const s of STATES) if (!older[s]) fill(s, b.columns[s]);
    document.body.dataset.refreshes = String(+(document.body.dataset.refreshes || 0) + 1);
  } finally {
    inFlight = false;
    timer = document.visibilityState === 'visible' ? setTimeout(refresh, refreshSeconds * 1000) : null;
  }
}
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') refresh(); else { clearTimeout(timer); timer = null; }
});
document.querySelectorAll('[data-more]').forEach(b => b.onclick = async () => {
  const s = b.dataset.more; if (!cursors[s]) return;
  older[s] = true;
  const page = await (await fetch(`/api/jobs?status=${s}&limit=15&cursor=${encodeURIComponent(cursors[s])}`)).json();
  fill(s, page);
});
document.querySelectorAll('[data-newest]').forEach(b => b.onclick = () => { delete older[b.dataset.newest]; refresh(); });
async function workers() {
  const r = await fetch('/api/workers'); const j = await r.json();
  const target = document.getElementById('workers');
  if (r.ok) target.textContent = j.workers.join(', ') || 'none answered';
  else show(target, el('span', {class: 'err'}, j.error));
}
refresh(); workers(); setInterval(() => { if (document.visibilityState === 'visible') workers(); }, 10000);
