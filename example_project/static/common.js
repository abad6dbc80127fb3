// DOM helpers: every text from the server becomes a text node (textContent), never parsed as HTML.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === 'class') node.className = value;
    else if (key.startsWith('data-')) node.dataset[key.slice(5).replace(/-(.)/g, (_, c) => c.toUpperCase())] = value;
    else node[key] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? '')));
  return node;
}
function show(target, ...children) { target.replaceChildren(...children); }
function jobLink(id) { return el('a', {href: '/jobs/' + encodeURIComponent(id)}, el('code', {}, id.slice(0, 8))); }
