// "Select by words": SAM 3 finds every instance of a concept ("person"); each becomes a toggle,
// and the union of the instances left on is the selection, edited like any other mask.

import { segment } from './api.js';
import { maskFromPng } from './maskops.js';

/** The union of the masks whose `on` flag is set (all Uint8Array of one size). */
export function unionOf(instances) {
  const on = instances.filter((instance) => instance.on);
  if (!on.length) return null;
  const union = new Uint8Array(on[0].mask.length);
  for (const { mask } of on) {
    for (let i = 0; i < union.length; i += 1) union[i] |= mask[i];
  }
  return union;
}

export class WordSelection {
  /**
   * `form` holds the text field; `list` gets one toggle per instance. `photo()` gives
   * {blob, width, height} of the open photo; `onSelect(mask)` receives the union (or null).
   */
  constructor(form, list, { photo, onSelect, onError }) {
    this.form = form;
    this.list = list;
    this.photo = photo;
    this.onSelect = onSelect;
    this.onError = onError;
    this.instances = [];
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.find(form.elements.text.value.trim(), Number(form.elements.threshold.value));
    });
  }

  /** Forget the previous photo's instances. */
  clear() {
    this.instances = [];
    this.list.replaceChildren();
  }

  async find(text, threshold = 0.5) {
    const photo = this.photo();
    if (!text || !photo) return;
    this.clear();
    try {
      const response = await segment(photo.blob, { text, threshold });
      if (photo !== this.photo()) return; // another photo by now
      const masks = await Promise.all(
        response.instances.map((found) => maskFromPng(found.mask, photo.width, photo.height)),
      );
      this.instances = response.instances.map((found, i) => ({ ...found, mask: masks[i], on: true }));
      this.render(text);
      this.onSelect(unionOf(this.instances));
    } catch (error) {
      this.onError(error.message);
    }
  }

  render(text) {
    this.list.replaceChildren();
    this.instances.forEach((instance, i) => {
      const label = document.createElement('label');
      const toggle = document.createElement('input');
      toggle.type = 'checkbox';
      toggle.checked = instance.on;
      toggle.dataset.testid = `instance-${i + 1}`;
      toggle.addEventListener('change', () => {
        instance.on = toggle.checked;
        this.onSelect(unionOf(this.instances));
      });
      label.append(toggle, ` ${text} ${i + 1} · score ${instance.score.toFixed(2)}`);
      this.list.append(label);
    });
  }
}
