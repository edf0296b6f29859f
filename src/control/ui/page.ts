/**
 * The approver page: static HTML plus one script, served with a strict CSP. The page
 * keeps the approver's bearer token in sessionStorage and calls the same JSON API as
 * every other client; all request text is inserted with textContent, never as HTML.
 */
export const UI_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pamgate — access requests</title>
<link rel="stylesheet" href="/ui/app.css">
</head>
<body>
<header><h1>pamgate</h1><span id="who"></span></header>
<main>
  <form id="login">
    <label for="token">Bearer token (JWT)</label>
    <input id="token" name="token" type="password" autocomplete="off" required>
    <button type="submit">Sign in</button>
    <p class="hint">The token stays in this browser tab (sessionStorage) and is sent only to this gateway.</p>
  </form>
  <section id="app" hidden>
    <nav>
      <label>Status
        <select id="status">
          <option value="pending" selected>pending</option>
          <option value="approved">approved</option>
          <option value="">all</option>
        </select>
      </label>
      <button id="refresh" type="button">Refresh</button>
      <button id="logout" type="button">Sign out</button>
    </nav>
    <p id="message" role="status"></p>
    <table>
      <thead><tr><th>Requested</th><th>By</th><th>Task / role</th><th>Reason</th><th>Hours</th><th>Approvals</th><th>Status</th><th></th></tr></thead>
      <tbody id="rows"></tbody>
    </table>
  </section>
</main>
<script type="module" src="/ui/app.js"></script>
</body>
</html>
`;

export const UI_CSS = `
[hidden] { display: none !important; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1b1f24; background: #f6f7f9; }
header { display: flex; justify-content: space-between; align-items: center; padding: 0.6rem 1.2rem; background: #1f3a5f; color: #fff; }
header h1 { font-size: 1.1rem; margin: 0; }
main { padding: 1rem 1.2rem; }
form#login { display: grid; gap: 0.4rem; max-width: 32rem; }
input, select, button { font: inherit; padding: 0.3rem 0.5rem; }
nav { display: flex; gap: 0.6rem; align-items: center; margin-bottom: 0.6rem; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: 0.35rem 0.5rem; border-bottom: 1px solid #dde1e6; vertical-align: top; }
td.actions { white-space: nowrap; }
button.approve { background: #1a7f37; color: #fff; border: 0; }
button.deny, button.revoke { background: #b42318; color: #fff; border: 0; }
#message.error { color: #b42318; }
.hint { color: #57606a; font-size: 0.85rem; }
`;

export const UI_JS = `
const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem('pamgate.token') || '' };

/** The answer's data and whether a next page follows (Link rel="next"); throws the API's error message. */
async function call(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { authorization: 'Bearer ' + state.token, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((data.error && data.error.message) || res.statusText);
  return { data, more: /rel="next"/.test(res.headers.get('link') || '') };
}

async function api(method, path, body) {
  return (await call(method, path, body)).data;
}

function say(text, isError) {
  $('message').textContent = text;
  $('message').className = isError ? 'error' : '';
}

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

function actionButton(label, cls, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.className = cls;
  b.addEventListener('click', onClick);
  return b;
}

async function decide(id, verb) {
  const comment = verb === 'approve' ? '' : (prompt('Comment for ' + verb + ' (optional)') || '');
  try {
    const r = await api('POST', '/api/requests/' + encodeURIComponent(id) + '/' + verb, comment ? { comment } : {});
    say(verb + ': request ' + r.id + ' is now ' + r.status);
  } catch (err) {
    say(verb + ' failed: ' + err.message, true);
  }
  await load();
}

// One page of the listing: the API answers at most this many at a time and says (Link) when more follow.
const PAGE = 200;

async function load() {
  const status = $('status').value;
  let list;
  let more = false;
  try {
    ({ data: list, more } = await call('GET', '/api/requests?limit=' + PAGE + (status ? '&status=' + status : '')));
  } catch (err) {
    say('cannot load requests: ' + err.message, true);
    if (/token/i.test(err.message)) signOut();
    return;
  }
  const rows = $('rows');
  rows.replaceChildren();
  for (const r of list) {
    const tr = document.createElement('tr');
    tr.dataset.id = r.id;
    tr.append(
      cell(new Date(r.createdAt).toLocaleString()),
      cell(r.requester),
      cell(r.task || ('role ' + r.role)),
      cell(r.reason + (r.ticket ? ' [' + r.ticket + ']' : '')),
      cell(String(r.durationHours)),
      cell(r.approvals.length + '/' + r.approvalsRequired),
      cell(r.status),
    );
    const actions = document.createElement('td');
    actions.className = 'actions';
    if (r.status === 'pending') {
      actions.append(actionButton('Approve', 'approve', () => decide(r.id, 'approve')), ' ', actionButton('Deny', 'deny', () => decide(r.id, 'deny')));
    } else if (r.status === 'approved') {
      actions.append(actionButton('Revoke', 'revoke', () => decide(r.id, 'revoke')));
    }
    tr.append(actions);
    rows.append(tr);
  }
  const note = list.length === 0 ? 'no ' + (status ? status + ' ' : '') + 'requests'
    : more ? 'showing the oldest ' + list.length + ' ' + (status ? status + ' ' : '') + 'requests; more exist: choose a status, or list them all with pamgate requests' : '';
  if (note) {
    const tr = document.createElement('tr');
    tr.id = more ? 'more' : 'none';
    const td = cell(note);
    td.colSpan = 8;
    tr.append(td);
    rows.append(tr);
  }
}

function signOut() {
  sessionStorage.removeItem('pamgate.token');
  state.token = '';
  $('app').hidden = true;
  $('login').hidden = false;
  $('who').textContent = '';
}

function signedIn() {
  $('login').hidden = true;
  $('app').hidden = false;
  try {
    const claims = JSON.parse(atob(state.token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    $('who').textContent = claims.upn || claims.preferred_username || claims.sub || '';
  } catch { /* display only */ }
  load();
}

$('login').addEventListener('submit', (e) => {
  e.preventDefault();
  state.token = $('token').value.trim();
  sessionStorage.setItem('pamgate.token', state.token);
  $('token').value = '';
  signedIn();
});
$('refresh').addEventListener('click', load);
$('status').addEventListener('change', load);
$('logout').addEventListener('click', signOut);
if (state.token) signedIn();
`;
