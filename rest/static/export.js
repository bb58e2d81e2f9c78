// Export and share a mixer's settings: the mix is rendered by the server's mix route (POST /apiv1/mix, the same
// bytes as any client asking for that recipe gets), and a link carries the settings (recipe-url.js). Its state is
// announced in a live region.
import * as api from "./api.js";
import { el } from "./dom.js";
import { FORMATS, defaultFormat, describe, recipeOf, shareLink } from "./recipe-url.js";

const KEEP_MS = 60000; // an exported mix's bytes stay in the tab this long: its download has started by then

export class ExportPanel {
  // song: {name, hash, query}; tracks: the mixer's; mixerSettings() gives {gains, mute, solo} as the mixer has them.
  constructor(song, tracks, mixerSettings) {
    this.song = song;
    this.tracks = tracks;
    this.mixerSettings = mixerSettings;
    this.baseName = song.name.replace(/\.[^.]+$/, "");
    this.format = el("select", { class: "export-format" },
      ...FORMATS.map((format) => el("option", { value: format }, format.toUpperCase())));
    this.format.value = defaultFormat(song);
    this.exportButton = el("button", { type: "button", class: "export" }, "Export mix");
    this.state = el("p", { class: "export-state", role: "status", "aria-live": "polite" });
    this.link = el("input", { type: "url", class: "share-link", readonly: true, spellcheck: "false" });
    this.copyButton = el("button", { type: "button", class: "copy-link" }, "Copy link");
    this.save = el("a", { hidden: true }, "Save the exported mix");
    this.format.addEventListener("change", () => this.refresh());
    this.exportButton.addEventListener("click", () => this.export());
    this.copyButton.addEventListener("click", () => this.copy());
    this.link.addEventListener("focus", () => this.link.select());
    this.root = el("div", { class: "mix-export", role: "group", "aria-label": `Export or share this mix of ${song.name}` },
      el("label", {}, "Export format ", this.format), this.exportButton, this.state,
      el("label", { class: "share" }, "Link to this mix ", this.link), this.copyButton, this.save);
    this.refresh();
  }

  settings() {
    return { ...this.mixerSettings(), format: this.format.value };
  }

  recipe() {
    return recipeOf(this.settings(), this.tracks);
  }

  // The link and the recipe as the mixer is now (the recipe is kept on the element for tests and curious readers).
  refresh() {
    this.link.value = shareLink(this.song, this.settings());
    this.root.dataset.recipe = JSON.stringify(this.recipe());
  }

  async export() {
    const recipe = this.recipe();
    this.exportButton.disabled = true;
    this.root.dataset.exporting = "true";
    this.state.textContent = `Rendering the mix (${describe(recipe, this.tracks)})…`;
    try {
      const { blob, digest } = await api.renderMix(this.song.hash, this.song.query, recipe);
      const name = `${this.baseName}-mix-${digest.slice(0, 8)}.${recipe.format}`;
      const url = URL.createObjectURL(blob);
      this.save.href = url;
      this.save.download = name;
      this.save.click();
      setTimeout(() => URL.revokeObjectURL(url), KEEP_MS);
      this.state.textContent = `Exported ${name} (${(blob.size / 1048576).toFixed(1)} MB)`;
    } catch (error) {
      const why = error.code === "song_not_done" ? "the song is still separating" : error.message;
      this.state.textContent = `Could not export the mix: ${why}`;
    } finally {
      this.exportButton.disabled = false;
      delete this.root.dataset.exporting;
    }
  }

  async copy() {
    try {
      await navigator.clipboard.writeText(this.link.value);
      this.state.textContent = "Link copied";
    } catch {
      this.link.focus(); // selects it
      this.state.textContent = "The link is selected: copy it with Ctrl+C (⌘C)";
    }
  }
}
