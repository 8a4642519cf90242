// Dashboard entry point: header wiring (live indicator, token dialog), relative-time ticker, router start.
import { onLive, onAuth, getToken, setToken } from './js/api.js';
import { tickTimes } from './js/format.js';
import { start, route } from './js/router.js';

const liveEl = document.querySelector('[data-testid=live]');
onLive((ok) => {
  const state = ok ? 'live' : 'offline';
  if (liveEl.dataset.state !== state) {
    liveEl.dataset.state = state;
    liveEl.textContent = state;
    liveEl.title = ok ? 'The last refresh succeeded' : 'The server is unreachable';
  }
});

const dialog = document.querySelector('dialog[data-testid=token-dialog]');
const form = document.getElementById('token-form');
const input = document.getElementById('token-input');
const message = document.getElementById('token-message');
const button = document.querySelector('[data-testid=token-button]');

function markToken() {
  button.textContent = getToken() ? 'Token ✓' : 'Token';
  button.title = getToken() ? 'An access token is set for this tab' : 'Set an access token';
}

function openToken(msg) {
  message.hidden = !msg;
  message.textContent = msg || '';
  input.value = getToken();
  if (!dialog.open) dialog.showModal();
  input.focus();
}

function saveToken(value) {
  setToken(value.trim());
  markToken();
  dialog.close();
  route(); // reload the page's data with the new token
}

button.addEventListener('click', () => openToken(''));
form.addEventListener('submit', (e) => { e.preventDefault(); saveToken(input.value); });
document.getElementById('token-clear').addEventListener('click', () => saveToken(''));
document.getElementById('token-cancel').addEventListener('click', () => dialog.close());
onAuth((msg) => openToken(`The server refused the request: ${msg}. Enter a token with access.`));
markToken();

setInterval(() => { if (!document.hidden) tickTimes(); }, 5000);
start();
