// Tiny DOM helpers: build elements safely (text nodes only, never HTML strings) and patch them in place.

const SVG_NS = 'http://www.w3.org/2000/svg';

function dispatch(e) {
  const fn = e.currentTarget._on && e.currentTarget._on[e.type];
  if (fn) fn(e);
}

function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'key') el._key = String(v);
    else if (k === 'class') el.setAttribute('class', Array.isArray(v) ? v.filter(Boolean).join(' ') : v);
    else if (k === 'dataset') {
      for (const [dk, dv] of Object.entries(v)) if (dv !== null && dv !== undefined) el.dataset[dk] = String(dv);
    } else if (k === 'style') Object.assign(el.style, v);
    else if (k === 'value' || k === 'checked' || k === 'selected') el[k] = v;
    else if (k.startsWith('on') && typeof v === 'function') {
      const type = k.slice(2).toLowerCase();
      if (!el._on) el._on = {};
      el._on[type] = v;
      el.addEventListener(type, dispatch);
    } else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false || c === true) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** h('td', {class: 'x', dataset: {a: 1}, onclick: fn}, 'text', child, [more]) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** The same for SVG elements. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function text(str) {
  return document.createTextNode(String(str));
}

/** Copies event handlers of `nu` (and its descendants) onto the equal, kept tree `old`. */
function transfer(old, nu) {
  if (nu._on) {
    if (!old._on) old._on = {};
    for (const type of Object.keys(nu._on)) {
      if (!old._on[type]) old.addEventListener(type, dispatch);
    }
    old._on = nu._on;
  } else if (old._on) old._on = {};
  if (nu._key !== undefined) old._key = nu._key;
  const oc = old.children, nc = nu.children;
  for (let i = 0; i < nc.length && i < oc.length; i++) transfer(oc[i], nc[i]);
}

/** Turns `old` into `nu` keeping unchanged nodes (so focus and scroll survive); returns the node in the DOM. */
export function morph(old, nu) {
  if (old === nu) return old;
  if (old.isEqualNode(nu)) { transfer(old, nu); return old; }
  if (old.nodeType !== 1 || old.nodeName !== nu.nodeName || old._key !== nu._key) {
    old.replaceWith(nu);
    return nu;
  }
  for (const a of Array.from(old.attributes)) if (!nu.hasAttribute(a.name)) old.removeAttribute(a.name);
  for (const a of Array.from(nu.attributes)) if (old.getAttribute(a.name) !== a.value) old.setAttribute(a.name, a.value);
  if (nu._on || old._on) {
    if (!old._on) old._on = {};
    for (const type of Object.keys(nu._on || {})) if (!old._on[type]) old.addEventListener(type, dispatch);
    old._on = nu._on || {};
  }
  const oc = Array.from(old.childNodes), nc = Array.from(nu.childNodes);
  if (oc.length === nc.length && nu.children.length === nc.length) {
    for (let i = 0; i < nc.length; i++) morph(oc[i], nc[i]);
  } else if (oc.length === nc.length && oc.every((o, i) => o.nodeType === nc[i].nodeType)) {
    for (let i = 0; i < nc.length; i++) {
      if (nc[i].nodeType === 1) morph(oc[i], nc[i]);
      else if (oc[i].nodeValue !== nc[i].nodeValue) oc[i].nodeValue = nc[i].nodeValue;
    }
  } else {
    old.replaceChildren(...nc);
  }
  return old;
}

/** Makes `parent`'s element children be `nodes`, reusing existing children with the same key (h's `key` attribute). */
export function patchList(parent, nodes) {
  const old = new Map();
  let i = 0;
  for (const c of Array.from(parent.children)) {
    old.set(c._key !== undefined ? c._key : '#' + i, c);
    i++;
  }
  const result = [];
  i = 0;
  for (const n of nodes) {
    const k = n._key !== undefined ? n._key : '#' + i;
    i++;
    const o = old.get(k);
    if (o) {
      old.delete(k);
      result.push(morph(o, n));
    } else result.push(n);
  }
  for (const o of old.values()) if (o.parentNode === parent) o.remove();
  for (let j = 0; j < result.length; j++) {
    const cur = parent.children[j];
    if (cur !== result[j]) parent.insertBefore(result[j], cur || null);
  }
  while (parent.children.length > result.length) parent.lastElementChild.remove();
}

/** Replaces the content of a slot element, morphing when possible. */
export function fill(slot, ...children) {
  const tmp = document.createElement(slot.nodeName);
  append(tmp, children);
  if (slot.childNodes.length === 0) slot.append(...tmp.childNodes);
  else if (slot.children.length === tmp.children.length && slot.childNodes.length === tmp.childNodes.length && tmp.children.length === tmp.childNodes.length) {
    const nodes = Array.from(tmp.children);
    for (let i = 0; i < nodes.length; i++) morph(slot.children[i], nodes[i]);
  } else slot.replaceChildren(...tmp.childNodes);
}
