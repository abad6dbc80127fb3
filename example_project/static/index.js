function tile(image, label) {
  const d = el('div', {class: 'sample', 'data-label': label});
  for (const v of image) {
    const c = 255 - Math.round(v / 16 * 255);
    const p = el('div', {class: 'px'}); p.style.background = `rgb(${c},${c},${c})`; d.append(p);
  }
  return d;
}
const out = () => document.getElementById('prediction');
async function poll(id) {
  for (let i = 0; i < 600; i++) {
    const j = await (await fetch('/api/jobs/' + encodeURIComponent(id))).json();
    if (j.state === 'SUCCESS') {
      show(out(), 'Prediction: ', el('strong', {class: 'ok', id: 'digit'}, j.result.digit),
           ` (confidence ${j.result.confidence}) · `, el('a', {href: '/jobs/' + encodeURIComponent(id)}, 'job ' + id.slice(0, 8)));
      return;
    }
    if (j.state === 'FAILURE') { show(out(), el('span', {class: 'err'}, j.error)); return; }
    out().textContent = 'waiting… ' + (j.state || '');
    await new Promise(r => setTimeout(r, 150));
  }
}
async function submit(body, isFile) {
  const r = await fetch('/api/predict', isFile ? {method: 'POST', body}
    : {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  const j = await r.json();
  if (!r.ok) { show(out(), el('span', {class: 'err'}, j.error)); return; }
  poll(j.task_id);
}
fetch('/api/samples').then(r => r.json()).then(list => {
  const box = document.getElementById('samples');
  for (const s of list) { const t = tile(s.image, s.label); t.onclick = () => submit({image: s.image}); box.append(t); }
});
document.getElementById('upload').onchange = e => { const f = new FormData(); f.append('file', e.target.files[0]); submit(f, true); };
document.getElementById('batch-form').onsubmit = async e => {
  e.preventDefault();
  const body = {count: +document.getElementById('batch-count').value, bad: +document.getElementById('batch-bad').value,
                long: document.getElementById('batch-long').checked};
  const r = await fetch('/api/batch', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  const j = await r.json();
  const status = document.getElementById('batch-status');
  if (r.ok) show(status, `submitted ${(j.task_ids || []).length} jobs${j.long_task_id ? ' + 1 long job' : ''} · `,
                 el('a', {href: '/jobs'}, 'watch the job board'));
  else show(status, el('span', {class: 'err'}, j.error));
};
