// The result: before/after comparison, the PNG download, and the photo's versions.

import { base64ToBytes } from './api.js';

const urls = new Map(); // element id -> object URL it shows, revoked when replaced

function show(id, blob) {
  const element = document.getElementById(id);
  const url = URL.createObjectURL(blob);
  if (urls.has(id)) URL.revokeObjectURL(urls.get(id));
  urls.set(id, url);
  if (element.tagName === 'A') element.href = url;
  else element.src = url;
  return url;
}

function mimeOf(bytes) {
  if (bytes[0] === 0x89 && bytes[1] === 0x50) return 'image/png';
  if (bytes[0] === 0xff && bytes[1] === 0xd8) return 'image/jpeg';
  return 'image/webp';
}

/** Show the edit's result over the photo it came from; resolves once both are decoded. */
export async function showResult(response, action, photo) {
  const bytes = base64ToBytes(response.image);
  const blob = new Blob([bytes], { type: mimeOf(bytes) });
  show('before', photo.blob);
  const resultUrl = show('result', blob);
  const download = document.getElementById('download');
  download.href = resultUrl;
  download.download = `inpainted-${action}.${blob.type.split('/')[1]}`;
  const result = document.getElementById('result');
  await Promise.all([result.decode(), document.getElementById('before').decode()]);
  return blob;
}

/** The photo's versions (original, then each kept result); a click goes back to one. */
export class Versions {
  constructor(list, group, onOpen) {
    this.list = list;
    this.group = group;
    this.onOpen = onOpen;
    this.items = [];
    this.current = -1;
  }

  reset(blob) {
    this.items = [{ blob, label: 'original' }];
    this.current = 0;
    this.render();
  }

  /** A new version after the current one (later ones, from an earlier branch, are dropped). */
  add(blob, label) {
    this.items.splice(this.current + 1);
    this.items.push({ blob, label });
    this.current = this.items.length - 1;
    this.render();
  }

  render() {
    this.group.hidden = this.items.length < 2;
    this.list.replaceChildren(...this.items.map((item, i) => {
      const li = document.createElement('li');
      li.className = i === this.current ? 'current' : '';
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = item.label;
      button.addEventListener('click', () => {
        this.current = i;
        this.render();
        this.onOpen(item.blob);
      });
      li.append(button);
      return li;
    }));
  }
}
