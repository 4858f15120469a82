// Keyboard shortcuts and the help overlay (`?`).

function typing(target) {
  return target instanceof HTMLElement
    && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName));
}

/** bindings: {key: handler}; keys like 'z', 'ctrl+z', 'ctrl+shift+z', '?', 'delete'. */
export function installShortcuts(bindings, help) {
  document.getElementById('help-button').addEventListener('click', () => help.showModal());
  document.addEventListener('keydown', (event) => {
    if (typing(event.target) && event.key !== 'Escape') return;
    const ctrl = event.ctrlKey || event.metaKey;
    const parts = [ctrl && 'ctrl', ctrl && event.shiftKey && 'shift', event.key.toLowerCase()];
    const chord = event.key === '?' ? '?' : parts.filter(Boolean).join('+');
    if (chord === '?') {
      event.preventDefault();
      if (help.open) help.close(); else help.showModal();
      return;
    }
    if (help.open) return;
    const handler = bindings[chord];
    if (handler) {
      event.preventDefault();
      handler(event);
    }
  });
}
