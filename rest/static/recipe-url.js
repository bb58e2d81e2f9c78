// A mixer's settings as the mix route's recipe (docs/mixes.md), and as a link that carries them: the fragment names
// the song (songhash, name, options) and each stem's fader in dB, mute and solo, so opening the link shows that song
// with its mixer set as it was. The fragment never reaches the server. Faders are linear, 0 to 1, as the mixer plays
// them; recipes and links carry decibels to the hundredth.
const SONGHASH = /^[0-9a-f]{56}$/;
const TRACK = /^[a-z_]{1,40}$/;
export const FLOOR_DB = -120; // the recipe's lowest gain; a fader at 0 is muted in the recipe
export const FORMATS = ["mp3", "wav", "flac"];

export function decibels(fader) {
  return fader > 0 ? Math.max(FLOOR_DB, Math.round(2000 * Math.log10(fader)) / 100) : FLOOR_DB;
}

export function fader(db) {
  return Math.min(1, 10 ** (db / 20));
}

// settings: {gains: {track: dB}, mute: [track], solo: [track], format}. The recipe mutes what the mixer silences:
// muted stems, stems left out by a solo, faders at 0. Gains at 0 dB are left out (they are the recipe's default).
export function recipeOf(settings, tracks) {
  const soloing = settings.solo.length > 0;
  const recipe = { gains: {}, mute: [], format: settings.format };
  for (const track of tracks) {
    const db = settings.gains[track] ?? 0;
    if (settings.mute.includes(track) || (soloing && !settings.solo.includes(track)) || db <= FLOOR_DB) {
      recipe.mute.push(track);
    } else if (db !== 0) {
      recipe.gains[track] = db;
    }
  }
  return recipe;
}

// What a recipe does, in words, for the export's announcements.
export function describe(recipe, tracks) {
  if (recipe.mute.length === tracks.length) return "every stem muted";
  const parts = [];
  if (recipe.mute.length) parts.push(`${recipe.mute.join(", ")} muted`);
  for (const [track, db] of Object.entries(recipe.gains)) parts.push(`${track} at ${db} dB`);
  return parts.join("; ") || "every stem at 0 dB";
}

// The link to a song with these settings (song: {hash, name, query}).
export function shareLink(song, settings) {
  const fragment = new URLSearchParams({ song: song.hash, name: song.name });
  if (song.query) fragment.set("options", song.query);
  if (settings.mute.length) fragment.set("mute", settings.mute.join(","));
  if (settings.solo.length) fragment.set("solo", settings.solo.join(","));
  const gains = Object.entries(settings.gains).filter(([, db]) => db !== 0).map(([track, db]) => `${track}:${db}`);
  if (gains.length) fragment.set("gains", gains.join(","));
  if (settings.format !== defaultFormat(song)) fragment.set("format", settings.format);
  return `${location.origin}${location.pathname}#${fragment}`;
}

// The mix's format unless chosen: the song's tracks' own, when the mix route can write it.
export function defaultFormat(song) {
  const format = new URLSearchParams(song.query || "").get("format");
  return FORMATS.includes(format) ? format : "mp3";
}

function fragment() {
  return new URLSearchParams(location.hash.slice(1));
}

// The song this page's address names, as app.js keeps songs ({name, hash, query, label}); null when none.
export function sharedSong() {
  const shared = fragment();
  const hash = shared.get("song") || "";
  if (!SONGHASH.test(hash)) return null;
  const query = shared.get("options") || "";
  const label = query ? [...new URLSearchParams(query)].map(([name, value]) => `${name} ${value}`).join(" · ") : "";
  return { name: (shared.get("name") || hash.slice(0, 12)).slice(0, 200), hash, query, label: label || "shared" };
}

// The settings the address carries for this song, of these tracks; null when it names another song (or none).
// Names of tracks the song does not have and gains that are not numbers are left out; gains are kept from
// FLOOR_DB to 0 dB, the faders' range.
export function sharedSettings(song, tracks) {
  const shared = sharedSong();
  if (!shared || shared.hash !== song.hash || shared.query !== (song.query || "")) return null;
  const names = (key) => (fragment().get(key) || "").split(",").filter((track) => tracks.includes(track));
  const gains = {};
  for (const entry of (fragment().get("gains") || "").split(",")) {
    const [track, value] = entry.split(":");
    const db = Number(value);
    if (tracks.includes(track) && TRACK.test(track) && value && Number.isFinite(db)) {
      gains[track] = Math.min(0, Math.max(FLOOR_DB, db));
    }
  }
  const format = fragment().get("format");
  return { gains, mute: names("mute"), solo: names("solo"), format: FORMATS.includes(format) ? format : defaultFormat(song) };
}
