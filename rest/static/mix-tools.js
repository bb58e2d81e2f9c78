// What a song's mixer gains for mixes (docs/mixes.md, "The page"): a waveform per stem, each fader's level read out
// in dB, export of the mixer's settings through the mix route, a link that carries them, and the settings of such a
// link restored when the page is opened from it. It uses the Mixer (mixer.js) only through what is listed here:
// mixer.root, mixer.stems (track, row, volume, mute, solo, muted, soloed, audio), mixer.toggle, mixer.applyGains,
// mixer.seekTo and mixer.master.
import { el } from "./dom.js";
import { ExportPanel } from "./export.js";
import { decibels, fader, sharedSettings } from "./recipe-url.js";
import { Waveform } from "./waveforms.js";

// song: {name, hash, query}; call once the mixer's root is on the page.
export function attachMixTools(mixer, song) {
  const tracks = mixer.stems.map((stem) => stem.track);
  const restored = sharedSettings(song, tracks);
  if (restored) restore(mixer, restored);
  const panel = new ExportPanel(song, tracks, () => settingsOf(mixer));
  if (restored) panel.format.value = restored.format;
  const waves = mixer.stems.map((stem) => {
    const wave = new Waveform(stem, song, (seconds) => mixer.seekTo(seconds));
    const readout = el("span", { class: "gain-db", "aria-hidden": "true" });
    stem.row.append(el("div", { class: "stem-wave" }, readout, wave.root));
    const changed = () => {
      showLevel(stem, readout);
      panel.refresh();
    };
    stem.volume.addEventListener("input", changed);
    stem.mute.addEventListener("click", changed);
    stem.solo.addEventListener("click", changed);
    showLevel(stem, readout);
    wave.load();
    return wave;
  });
  const follow = () => waves.forEach((wave) => wave.showPosition(mixer.master.currentTime));
  for (const event of ["timeupdate", "seeked", "ended"]) mixer.master.addEventListener(event, follow);
  mixer.root.append(panel.root);
  panel.refresh();
  return panel;
}

function settingsOf(mixer) {
  const settings = { gains: {}, mute: [], solo: [] };
  for (const stem of mixer.stems) {
    settings.gains[stem.track] = decibels(Number(stem.volume.value));
    if (stem.muted) settings.mute.push(stem.track);
    if (stem.soloed) settings.solo.push(stem.track);
  }
  return settings;
}

function restore(mixer, settings) {
  for (const stem of mixer.stems) {
    stem.volume.value = String(fader(settings.gains[stem.track] ?? 0));
    if (stem.muted !== settings.mute.includes(stem.track)) mixer.toggle(stem, "muted", stem.mute);
    if (stem.soloed !== settings.solo.includes(stem.track)) mixer.toggle(stem, "soloed", stem.solo);
  }
  mixer.applyGains();
}

// The fader's level for eyes (beside its waveform) and for screen readers (the slider's value text).
function showLevel(stem, readout) {
  const value = Number(stem.volume.value);
  const text = value > 0 ? `${decibels(value).toFixed(1)} dB` : "silent";
  readout.textContent = text;
  stem.volume.setAttribute("aria-valuetext", text);
}
