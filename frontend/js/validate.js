// Checks made before anything is sent. They mirror the API's rules for POST /submissions, so a
// form that passes here is only refused by the server for reasons the page cannot know (no face,
// an image it cannot decode, a photo over the size limit).

export const AGE_MIN = 0;
export const AGE_MAX = 120;
export const NAME_MIN = 2;
export const NAME_MAX = 64;

// Letters, combining marks, spaces, hyphens and apostrophes (ASCII and typographic: U+2010, U+2019).
const NAME_PATTERN = /^[\p{L}\p{M} '\u2019\u2010-]+$/u;

export function checkAge(raw) {
  const value = (raw ?? "").trim();
  if (value === "") return { error: "Enter your age." };
  if (!/^\d+$/.test(value)) return { error: `Enter your age as a whole number from ${AGE_MIN} to ${AGE_MAX}.` };
  const age = Number(value);
  if (age < AGE_MIN || age > AGE_MAX) return { error: `Enter an age from ${AGE_MIN} to ${AGE_MAX}.` };
  return { value: age };
}

export function checkName(raw) {
  // As the server reads it: NFC, trimmed, inner runs of spaces collapsed.
  const value = (raw ?? "").normalize("NFC").trim().replace(/\s+/g, " ");
  if (value === "") return { error: "Enter your first name." };
  if ([...value].length < NAME_MIN) return { error: `Enter a first name of ${NAME_MIN} characters or more.` };
  if ([...value].length > NAME_MAX) return { error: `Enter a first name of ${NAME_MAX} characters or fewer.` };
  if (!NAME_PATTERN.test(value)) return { error: "Use letters, spaces, hyphens and apostrophes only." };
  return { value };
}

export function checkPhoto(photo) {
  if (!photo?.blob) return { error: "Choose a photo, drop one here or take one." };
  if (photo.blob.type && !photo.blob.type.startsWith("image/")) {
    return { error: "This file is not an image: choose a JPEG, PNG or WebP photo." };
  }
  if (photo.blob.size === 0) return { error: "This file is empty: choose another photo." };
  return { value: photo };
}

/** All fields at once: {values, errors}; `errors` is empty when the form may be sent. */
export function checkForm({ trueAge, firstName, photo }) {
  const checks = {
    true_age: checkAge(trueAge),
    first_name: checkName(firstName),
    image: checkPhoto(photo),
  };
  const values = {};
  const errors = {};
  for (const [field, check] of Object.entries(checks)) {
    if (check.error) errors[field] = check.error;
    else values[field] = check.value;
  }
  return { values, errors };
}
