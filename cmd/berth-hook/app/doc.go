// Package app is berth-hook's command line: one cobra subcommand per hook (install, prestart,
// sidecar, prestop), each filling pkg/hook's typed options from its flags. berth-hook runs
// inside app pods, in the containers the webhook injects, so the flags it parses are the ones
// pkg/webhook writes into those containers' args. It imports pkg/hook and internal/ only.
package app
