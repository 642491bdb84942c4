// The /docs page: example tabs and copy buttons. No dependencies, no network.
'use strict';

// Clipboard API first; where it is missing or denied (plain HTTP, headless browsers, policies),
// copy through a hidden textarea and execCommand, which works from a click handler.
function copyWithTextarea(text) {
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.style.position = 'fixed';
  area.style.top = '-1000px';
  area.style.opacity = '0';
  document.body.appendChild(area);
  area.select();
  area.setSelectionRange(0, text.length);
  let copied = false;
  try {
    copied = document.execCommand('copy');
  } finally {
    document.body.removeChild(area);
  }
  return copied;
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return 'clipboard';
    } catch (error) {
      // Denied: fall through to the textarea.
    }
  }
  return copyWithTextarea(text) ? 'fallback' : null;
}

function announce(message) {
  const status = document.getElementById('copy-status');
  status.textContent = message;
  clearTimeout(announce.timer);
  announce.timer = setTimeout(() => { status.textContent = ''; }, 4000);
}

async function onCopy(event) {
  const button = event.currentTarget;
  const code = document.getElementById(button.dataset.copyTarget);
  const how = await copyText(code.textContent);
  if (how) {
    button.dataset.copied = 'true';
    button.dataset.copiedVia = how;
    button.textContent = 'Copied';
    announce('Copied: ' + button.getAttribute('aria-label').replace(/^Copy /, ''));
    setTimeout(() => {
      button.textContent = 'Copy';
      delete button.dataset.copied;
    }, 4000);
  } else {
    button.dataset.copied = 'false';
    announce('Could not copy: select the text and copy it by hand.');
  }
}

function onTab(event) {
  const tab = event.currentTarget;
  for (const other of tab.parentElement.querySelectorAll('[role="tab"]')) {
    const selected = other === tab;
    other.setAttribute('aria-selected', selected ? 'true' : 'false');
    document.getElementById(other.getAttribute('aria-controls')).hidden = !selected;
  }
}

document.addEventListener('DOMContentLoaded', () => {
  for (const button of document.querySelectorAll('button.copy')) {
    button.addEventListener('click', onCopy);
  }
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener('click', onTab);
  }
  document.body.dataset.ready = 'true';
});
