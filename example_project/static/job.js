const box = document.getElementById('job');
const taskId = box.dataset.taskId;
async function load() {
  const r = await fetch('/api/jobs/' + encodeURIComponent(taskId));
  const j = await r.json();
  box.textContent = JSON.stringify(j, null, 2);
  if (r.ok && !['SUCCESS', 'FAILURE', 'REVOKED'].includes(j.state)) setTimeout(load, 1000);
}
load();
