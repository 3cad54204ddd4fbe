package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// docBlock is one fenced code block of the README or a docs/ page.
type docBlock struct {
	file string // README.md or docs/<page>.md
	line int    // where the block starts
	text string
}

// where names the block for a failure message: "docs/dba.md line 12".
func (b docBlock) where() string {
	return fmt.Sprintf("%s line %d", b.file, b.line)
}

// docFiles are the pages whose code blocks the tests run: README.md, then
// docs/*.md in name order (not docs/bench-records/).
func docFiles(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{"README.md"}, pages...)
}

// docBlocks returns every ```<lang> block of README.md and docs/*.md, in
// order.
func docBlocks(t *testing.T, lang string) []docBlock {
	t.Helper()
	var blocks []docBlock
	for _, file := range docFiles(t) {
		blocks = append(blocks, fileBlocks(t, file, lang)...)
	}
	return blocks
}

// fileBlocks returns every ```<lang> block of one file, in order.
func fileBlocks(t *testing.T, file, lang string) []docBlock {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []docBlock
	var cur *docBlock
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		switch text := sc.Text(); {
		case cur == nil && strings.TrimSpace(text) == "```"+lang:
			cur = &docBlock{file: file, line: line}
		case cur != nil && strings.TrimSpace(text) == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += text + "\n"
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if cur != nil {
		t.Fatalf("%s: the ```%s block at %s is not closed", file, lang, cur.where())
	}
	return blocks
}
