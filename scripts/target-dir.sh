# Sourced by the scripts that build, from the checkout's root: the build
# cache, outside the checkout and shared by every checkout of the project.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/pivotal-flow/target}
# cargo takes a workspace crate's build as fresh when the crate's files are
# no newer than it, whichever checkout it was built from: after a build of
# a newer checkout (a fresh clone), an older one's edits would go unbuilt
# and its tests run the other's code. So when the last build here was of
# another checkout, this one's files are marked changed first.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mkdir -p "$CARGO_TARGET_DIR"
  last_checkout="$CARGO_TARGET_DIR/.pivotal-checkout"
  if [ "$(cat "$last_checkout" 2>/dev/null)" != "$PWD" ]; then
    git ls-files -z | xargs -0 -r touch --no-create
    printf '%s\n' "$PWD" >"$last_checkout"
  fi
fi
