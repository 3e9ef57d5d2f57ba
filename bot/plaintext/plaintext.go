// Package plaintext turns what Guance stores (HTML issue descriptions and replies) into
// clean plain text, and cuts text to a length. It is pure: no I/O and no state.
package plaintext

import (
	"bytes"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/html"
)

// FromHTML turns Guance HTML (an issue description or a reply's content) into plain
// text. Tags are dropped and the text of @mention and #channel spans kept; <br>, <p>,
// <div>, <li> and other block tags become line breaks; entities are unescaped (&nbsp; is
// a space); script and style contents are dropped. A link whose text is not its address
// keeps the address in parentheses, since plain text cannot link. Runs of spaces become
// one space, runs of blank lines one blank line, and the result is trimmed. Text without
// markup passes through with only that clean-up, so plain-text descriptions keep their
// line breaks.
func FromHTML(s string) string {
	if !plainTextMarkup.MatchString(s) {
		// Not HTML: a monitor's plain-text message may well contain "<no value>" or
		// "List<String>", which a tokenizer would swallow as tags.
		if strings.Contains(s, "&") {
			s = html.UnescapeString(s)
		}
		return Clean(s, true)
	}
	z := html.NewTokenizer(strings.NewReader(s))
	var (
		w    plainWriter
		skip string // the element whose raw contents are being dropped
		href string // the address of the open <a>, if it is worth showing
		aAt  int    // w.b.Len() when that <a> opened
	)
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			// io.EOF, or a malformed tail the tokenizer gives up on: keep what we have.
			break
		}
		switch tt {
		case html.TextToken:
			if skip == "" {
				w.text(z.Text())
			}
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			tag := string(name)
			if skip != "" {
				continue
			}
			switch {
			case plainTextDropped[tag]:
				if tt == html.StartTagToken {
					skip = tag
				}
			case tag == "br" || tag == "hr":
				w.newline()
			case tag == "td" || tag == "th":
				w.b.WriteByte(' ')
			case plainTextBlocks[tag]:
				w.endLine()
			case tag == "a" && hasAttr && tt == html.StartTagToken:
				href, aAt = plainLinkTarget(z), w.b.Len()
			}
		case html.EndTagToken:
			name, _ := z.TagName()
			tag := string(name)
			if skip != "" {
				if tag == skip {
					skip = ""
				}
				continue
			}
			switch {
			case plainTextBlocks[tag]:
				w.endLine()
			case tag == "a" && href != "":
				if text := w.b.String()[aAt:]; !strings.Contains(text, href) {
					w.text([]byte(" (" + href + ")"))
				}
				href = ""
			}
		}
	}
	return Clean(w.b.String(), true)
}

// plainWriter collects FromHTML's output and knows whether the current line has text
// yet, so that block boundaries can end a line only once.
type plainWriter struct {
	b       strings.Builder
	hasText bool // the current line has more than whitespace
}

// text writes the text of a text token. Whitespace alone is layout between tags
// ("</p>\n  <p>"), not content, and becomes one space.
func (w *plainWriter) text(p []byte) {
	if len(bytes.TrimSpace(p)) == 0 {
		w.b.WriteByte(' ')
		return
	}
	w.b.Write(p)
	if i := bytes.LastIndexByte(p, '\n'); i >= 0 {
		w.hasText = len(bytes.TrimRight(p[i+1:], " \t\u00a0")) > 0
	} else {
		w.hasText = w.hasText || len(bytes.TrimRight(p, " \t\u00a0")) > 0
	}
}

func (w *plainWriter) newline() {
	w.b.WriteByte('\n')
	w.hasText = false
}

// endLine ends the line at a block boundary unless it is already ended, so that
// "</p><p>" and "</li><li>" make one line break, not two (an empty paragraph the user
// typed holds a <br>, which still makes its blank line).
func (w *plainWriter) endLine() {
	if w.hasText {
		w.newline()
	}
}

// plainTextMarkup matches what marks a text as HTML: a comment, a closing tag, or an opening tag
// of the elements Guance's editor writes.
var plainTextMarkup = regexp.MustCompile(`(?i)<!--|</[a-z]|<(?:br|p|div|span|a|img|ul|ol|li|b|i|u|s|strong|em|code|pre|table|tr|td|th|h[1-6]|blockquote|script|style|font)(?:\s[^>]*)?/?>`)

// plainTextDropped are the elements whose contents are not text a reader should see.
var plainTextDropped = map[string]bool{
	"script": true, "style": true, "noscript": true, "iframe": true,
	"noembed": true, "noframes": true, "template": true, "head": true,
}

// plainTextBlocks are the elements that start and end a line.
var plainTextBlocks = map[string]bool{
	"p": true, "div": true, "li": true, "ul": true, "ol": true, "dl": true, "dt": true,
	"dd": true, "tr": true, "table": true, "thead": true, "tbody": true, "tfoot": true,
	"caption": true, "h1": true, "h2": true, "h3": true, "h4": true, "h5": true, "h6": true,
	"blockquote": true, "pre": true, "section": true, "article": true, "header": true,
	"footer": true, "main": true, "nav": true, "aside": true, "figure": true,
	"figcaption": true, "address": true, "details": true, "summary": true, "form": true,
	"fieldset": true, "legend": true,
}

// plainLinkTarget returns the href of the <a> the tokenizer is on when it is an absolute
// http(s) address of sane length, else "".
func plainLinkTarget(z *html.Tokenizer) string {
	for {
		key, val, more := z.TagAttr()
		if string(key) == "href" {
			u := strings.TrimSpace(string(val))
			l := strings.ToLower(u)
			if (strings.HasPrefix(l, "http://") || strings.HasPrefix(l, "https://")) && len(u) <= 2048 {
				return u
			}
			return ""
		}
		if !more {
			return ""
		}
	}
}

// Clean normalises text for display: invalid UTF-8 is replaced, line endings become
// \n, NBSP and tabs become spaces, other control and bidi-override characters are
// dropped, trailing spaces are trimmed, runs of blank lines become one, and the whole is
// trimmed. With collapse, runs of spaces become one and lines lose their indentation
// too (wanted for HTML, whose whitespace is layout, not content).
func Clean(s string, collapse bool) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	var b strings.Builder
	b.Grow(len(s))
	blank := 0 // blank lines pending
	wrote := false
	for line := range strings.Lines(plainNewlines.Replace(s)) {
		line = plainCleanLine(line, collapse)
		if line == "" {
			blank++
			continue
		}
		if wrote {
			b.WriteByte('\n')
			if blank > 0 {
				b.WriteByte('\n')
			}
		}
		b.WriteString(line)
		wrote, blank = true, 0
	}
	return b.String()
}

// plainCleanLine cleans one line (see Clean).
func plainCleanLine(line string, collapse bool) string {
	var b strings.Builder
	space := false // with collapse: a space is pending
	for _, r := range line {
		if r == '\t' || r == '\u00a0' || collapse && unicode.Is(unicode.Zs, r) {
			r = ' '
		}
		switch {
		case r == ' ' && collapse:
			space = true
		case r == '\n', unicode.IsControl(r), plainIsBidi(r):
			// dropped
		default:
			if space && b.Len() > 0 {
				b.WriteByte(' ')
			}
			space = false
			b.WriteRune(r)
		}
	}
	return strings.TrimRight(b.String(), " ")
}

// plainNewlines turns every line ending into \n.
var plainNewlines = strings.NewReplacer("\r\n", "\n", "\r", "\n", "\u2028", "\n", "\u2029", "\n")

// plainIsBidi reports the invisible characters that reorder text, which can make a
// title or description read differently from what it is.
func plainIsBidi(r rune) bool {
	return r >= '\u202a' && r <= '\u202e' || r >= '\u2066' && r <= '\u2069'
}

// Truncate cuts s to at most maxRunes runes, marker included, and appends marker when it
// cuts (trailing spaces before the marker are dropped). It never splits a rune. When the
// marker alone does not fit, s is cut to maxRunes runes without it; maxRunes <= 0 gives "".
func Truncate(s string, maxRunes int, marker string) string {
	if maxRunes <= 0 {
		return ""
	}
	if utf8.RuneCountInString(s) <= maxRunes {
		return s
	}
	keep := maxRunes - utf8.RuneCountInString(marker)
	if keep < 0 {
		keep, marker = maxRunes, ""
	}
	cut := 0
	for i := range s {
		if keep == 0 {
			cut = i
			break
		}
		keep--
	}
	// A zero-width joiner or variation selector left dangling renders as garbage.
	return strings.TrimRight(s[:cut], " \t\n\u200d\ufe0f") + marker
}
