// Keyboard shortcuts and the help overlay (`?`).

function typing(target) {
  return target instanceof HTMLElement
    && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName));
}

/** A focused control that Enter or Space activates itself (the browser clicks it). */
function activates(target) {
  return target instanceof HTMLElement
    && target.matches('button, a[href], summary, [role=button], [role=radio], [role=tab], [role=link]');
}

/** bindings: {key: handler}; keys like 'z', 'ctrl+z', 'ctrl+shift+z', '?', 'delete'. */
export function installShortcuts(bindings, help) {
  document.getElementById('help-button').addEventListener('click', () => help.showModal());
  document.addEventListener('keydown', (event) => {
    // The stage (crosshair keys) and other widgets handle their own keys first.
    if (event.defaultPrevented) return;
    if (typing(event.target) && event.key !== 'Escape') return;
    if (activates(event.target) && (event.key === 'Enter' || event.key === ' ')) return;
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

/**
 * A radiogroup or tablist of buttons (WAI-ARIA pattern): one stop in the Tab order (the
 * checked one), arrow keys / Home / End move and choose, Enter and Space choose (click).
 * `attribute` is aria-checked (radios) or aria-selected (tabs).
 */
export function rovingGroup(container, attribute, onChoose) {
  const items = () => [...container.querySelectorAll('[role=radio], [role=tab]')];
  const mark = (chosen) => {
    for (const item of items()) {
      const on = item === chosen;
      item.setAttribute(attribute, String(on));
      item.tabIndex = on ? 0 : -1;
      item.classList.toggle('active', on);
    }
  };
  for (const item of items()) item.addEventListener('click', () => onChoose(item));
  container.addEventListener('keydown', (event) => {
    const list = items();
    const at = list.indexOf(event.target);
    if (at < 0) return;
    const moves = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 };
    let next = null;
    if (event.key in moves) next = list[(at + moves[event.key] + list.length) % list.length];
    else if (event.key === 'Home') [next] = list;
    else if (event.key === 'End') next = list.at(-1);
    if (!next) return;
    event.preventDefault();
    next.focus();
    onChoose(next);
  });
  return mark;
}
