// The page: choose or drop MP3s, pick options, submit; each song then gets a card that follows it to its mixer.
// Songs submitted from this browser are remembered in localStorage, so a reload keeps following them.
import * as api from "./api.js";
import { el } from "./dom.js";
import { sharedSong } from "./recipe-url.js";
import { SongCard } from "./song.js";

const SONGS_STORAGE = "msaas.songs";
const modelTracks = JSON.parse(document.getElementById("model-tracks").textContent);
const optionNames = JSON.parse(document.getElementById("option-names").textContent); // the options table's rows
const form = document.getElementById("submit-form");
const fileInput = document.getElementById("files");
const dropzone = document.getElementById("dropzone");
const chosen = document.getElementById("chosen");
const message = document.getElementById("form-message");
const songList = document.getElementById("songs");
const noSongs = document.getElementById("no-songs");
const keyInput = document.getElementById("api-key");
const select = (name) => document.getElementById(name);
let cards = [];

// --- options ---------------------------------------------------------------------------------------------

function refreshStemChoices() {
  const stems = select("two_stems");
  const current = stems.value;
  const model = select("model").value || Object.keys(modelTracks)[0];
  const sources = modelTracks[model] || [];
  stems.replaceChildren(
    el("option", { value: "" }, "All stems"),
    ...sources.map((stem) => el("option", { value: stem }, `${stem} and the rest (no_${stem})`)),
  );
  stems.value = sources.includes(current) ? current : "";
}

function refreshBitrate() {
  const bitrate = select("mp3_bitrate");
  bitrate.disabled = (select("format").value || "mp3") !== "mp3";
  if (bitrate.disabled) bitrate.value = "";
}

// An option's value as the API reads it: a flag is "true" when ticked, else left to the default.
function valueOf(name) {
  const control = select(name);
  return control.type === "checkbox" ? (control.checked ? "true" : "") : control.value;
}

function chosenOptions() {
  const query = new URLSearchParams();
  for (const name of optionNames) {
    const value = valueOf(name);
    if (value) query.set(name, value);
  }
  const format = select("format").value || "mp3";
  const label = [
    select("model").value || `${select("model").dataset.default} (default)`,
    select("two_stems").value ? `${select("two_stems").value} + no_${select("two_stems").value}` : "all stems",
    format + (select("mp3_bitrate").value ? ` ${select("mp3_bitrate").value} kbit/s` : ""),
    ...optionNames.filter((name) => !["model", "two_stems", "format", "mp3_bitrate"].includes(name))
      .filter((name) => valueOf(name)).map((name) => (valueOf(name) === "true" ? name : `${name} ${valueOf(name)}`)),
  ].join(" · ");
  return { query: query.toString(), label };
}

// --- files -----------------------------------------------------------------------------------------------

function showChosen() {
  chosen.replaceChildren(...[...fileInput.files].map((file) => el("li", {}, `${file.name} (${megabytes(file.size)})`)));
}

function megabytes(bytes) {
  return `${(bytes / 1048576).toFixed(1)} MB`;
}

dropzone.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropzone.classList.add("dragging");
});
dropzone.addEventListener("dragleave", () => dropzone.classList.remove("dragging"));
dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropzone.classList.remove("dragging");
  fileInput.files = event.dataTransfer.files;
  showChosen();
});
fileInput.addEventListener("change", showChosen);

// --- songs -----------------------------------------------------------------------------------------------

function remember() {
  const songs = cards.filter((card) => card.song.hash).map(({ song }) => song);
  localStorage.setItem(SONGS_STORAGE, JSON.stringify(songs));
  noSongs.hidden = cards.length > 0;
}

function addCard(song) {
  const card = new SongCard(song, {
    onDelete: (deleted) => {
      // Deleting removes the song with every option it was separated with: its other cards go too.
      for (const other of cards.filter((card) => card !== deleted && card.song.hash === deleted.song.hash)) other.stop();
      cards = cards.filter((card) => card.song.hash !== deleted.song.hash && card !== deleted);
      remember();
      message.textContent = `${deleted.song.name} deleted`;
    },
    onAuthNeeded: () => {
      keyInput.closest("details").open = true;
      message.textContent = "This server needs an API key: paste it under “API key”.";
    },
  });
  cards.unshift(card);
  songList.prepend(card.root);
  noSongs.hidden = true;
  return card;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const files = [...fileInput.files];
  if (!files.length) {
    message.textContent = "Choose or drop at least one MP3 first.";
    fileInput.focus();
    return;
  }
  const { query, label } = chosenOptions();
  const queued = files.map((file) => [file, addCard({ name: file.name, query, label })]);
  fileInput.value = "";
  showChosen();
  message.textContent = `Uploading ${files.length} song${files.length > 1 ? "s" : ""}…`;
  const uploading = message.textContent;
  for (const [file, card] of queued) {  // one upload at a time: they share the link
    if (await card.upload(file)) {
      remember();
      card.follow();
    }
  }
  if (message.textContent === uploading) message.textContent = "";
});

keyInput.value = api.apiKey();
keyInput.addEventListener("input", () => api.setApiKey(keyInput.value.trim()));

select("model").addEventListener("change", refreshStemChoices);
select("format").addEventListener("change", refreshBitrate);
refreshStemChoices();
refreshBitrate();

for (const song of JSON.parse(localStorage.getItem(SONGS_STORAGE) || "[]").reverse()) {
  addCard(song).follow();
}
const shared = sharedSong(); // a link to a song and its mix (recipe-url.js): followed like the songs sent from here
if (shared && !cards.some(({ song }) => song.hash === shared.hash && song.query === shared.query)) {
  addCard(shared).follow();
  remember();
}
noSongs.hidden = cards.length > 0;
