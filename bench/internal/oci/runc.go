package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Runc runs runc commands against one --root.
type Runc struct {
	Path string
}

// run executes runc with args and returns stdout.
func (r Runc) run(ctx context.Context, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, r.Path, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("runc %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// Create runs `runc create` for a bare container whose stdio is stdio
// (stdin is /dev/null).
func (r Runc) Create(ctx context.Context, root, id, bundle, pidfile string, stdio *os.File) error {
	cmd := exec.CommandContext(ctx, r.Path, "--root", root, "create", "--bundle", bundle, "--pid-file", pidfile, id)
	cmd.Stdout, cmd.Stderr = stdio, stdio
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("runc create %s (stderr in %s): %w", id, stdio.Name(), err)
	}
	return nil
}

// Start runs `runc start`.
func (r Runc) Start(ctx context.Context, root, id string) error {
	_, err := r.run(ctx, "--root", root, "start", id)
	return err
}

// Status returns the "status" field of `runc state`.
func (r Runc) Status(ctx context.Context, root, id string) (string, error) {
	out, err := r.run(ctx, "--root", root, "state", id)
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return "", fmt.Errorf("parse runc state: %w", err)
	}
	return st.Status, nil
}

// WaitRunning polls `runc state` until the container is running.
func (r Runc) WaitRunning(ctx context.Context, root, id string) error {
	for {
		st, err := r.Status(ctx, root, id)
		if err != nil {
			return err
		}
		if st == "running" {
			return nil
		}
		if st == "stopped" {
			return fmt.Errorf("container %s stopped before running", id)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s to run: %w", id, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// Exec runs `runc exec` in the foreground and returns its stdout.
func (r Runc) Exec(ctx context.Context, root, id string, args ...string) ([]byte, error) {
	return r.run(ctx, append([]string{"--root", root, "exec", id}, args...)...)
}

// Delete runs `runc delete --force`, which kills a running container.
func (r Runc) Delete(ctx context.Context, root, id string) error {
	_, err := r.run(ctx, "--root", root, "delete", "--force", id)
	return err
}

// List returns the IDs of the containers under root.
func (r Runc) List(ctx context.Context, root string) ([]string, error) {
	out, err := r.run(ctx, "--root", root, "list", "-q")
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(out)), nil
}

// Version returns runc's first version line.
func (r Runc) Version(ctx context.Context) string {
	out, err := r.run(ctx, "--version")
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return line
}
