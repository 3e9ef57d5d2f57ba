package plaintext

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// mentionHTML is the @mention markup of Guance's editor (guance.md §3.5).
const mentionHTML = `<span data-at-embedded="" data-insert-by="@" data-info="{&quot;item&quot;:{&quot;uuid&quot;:&quot;acnt_…&quot;}}" contenteditable="false">&nbsp;<span class="key-word">@name</span>&nbsp;</span>`

// listRowHTML is the description of the issue list example (guance.md §2.11).
const listRowHTML = `<span><span data-at-embedded="" data-insert-by="@" data-info="{&quot;item&quot;:{&quot;uuid&quot;:&quot;acnt_xxxx32&quot;}}" contenteditable="false">&nbsp;<span class="key-word">@jiangyd@jiagouyun.com</span>&nbsp;</span><span data-at-embedded="" data-insert-by="#" data-info="{&quot;item&quot;:{&quot;uuid&quot;:&quot;chan_xxxx32&quot;}}" contenteditable="false">&nbsp;<span class="key-word">#jjj</span>&nbsp;</span>nn</span>`

func TestPlainText(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"plain", "kong", "kong"},
		{"mention", mentionHTML + "please look", "@name please look"},
		{"list row", listRowHTML, "@jiangyd@jiagouyun.com #jjj nn"},
		{"entities", "<p>a &lt;b&gt; &amp; &quot;c&quot; &#39;d&#39; &#x4e2d;&#25991; x&nbsp;&nbsp;y</p>", `a <b> & "c" 'd' 中文 x y`},
		{"entities without tags", "a &lt;b&gt; &amp;amp; R&D", "a <b> &amp; R&D"},
		{"br", "one<br>two<br/>three<BR />four", "one\ntwo\nthree\nfour"},
		{"paragraphs", "<p>one</p><p>two</p><div>three</div>", "one\ntwo\nthree"},
		{"empty paragraph is a blank line", "<p>one</p><p><br></p><p>two</p>", "one\n\ntwo"},
		{"blank lines collapse", "<p>one</p><p><br></p><p><br></p><p><br></p><p>two</p>", "one\n\ntwo"},
		{"list", "<ul><li>first</li><li>second</li></ul>after", "first\nsecond\nafter"},
		{"nested spans", "<div><span>a <span><b>b</b> <i>c</i></span> d</span></div>", "a b c d"},
		{"script and style", "<style>p{color:red}</style><p>x</p><script>alert('<p>')</script>y<noscript>n</noscript>", "x\ny"},
		{"comment", "a<!-- hidden -->b", "ab"},
		{"layout whitespace", "<div>\n  <p>one</p>\n  <p>two</p>\n</div>\n", "one\ntwo"},
		{"text newlines kept", "<b>Alert</b>\nhost: x\nvalue: y", "Alert\nhost: x\nvalue: y"},
		{"link", `see <a href="https://example.com/a?b=1">the docs</a>.`, "see the docs (https://example.com/a?b=1)."},
		{"link text is the url", `<a href="https://example.com">https://example.com</a>`, "https://example.com"},
		{"javascript link", `<a href="javascript:alert(1)">x</a>`, "x"},
		{"table", "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>", "a b\nc d"},
		{"not html", "value <no value> for List<String>\n\n\n\nnext", "value <no value> for List<String>\n\nnext"},
		{"unclosed tag", "<p>a<span", "a"},
		{"crlf and tabs", "a\r\nb\rc\t\td", "a\nb\nc d"},
		{"controls and bidi", "a\x00b\x1bc\u202ed", "abcd"},
		{"invalid utf-8", "a\xffb", "a\uFFFDb"},
		{"trim", "  \n  x  \n  ", "x"},
		{"spaces collapse", "<p>a    b</p>", "a b"},
		{"ideographic space", "<p>a\u3000\u3000b</p>", "a b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FromHTML(tt.in); got != tt.want {
				t.Errorf("FromHTML(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestPlainTextLarge(t *testing.T) {
	in := strings.Repeat("<p>x &amp; <b>y</b></p>", 50000) // 1 MB
	got := FromHTML(in)
	if want := strings.Repeat("x & y\n", 50000)[:6*50000-1]; got != want {
		t.Errorf("FromHTML of 1 MB: got %d bytes, want %d", len(got), len(want))
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		in     string
		max    int
		marker string
		want   string
	}{
		{"hello", 5, "…", "hello"},
		{"hello", 10, "…", "hello"},
		{"hello world", 5, "…", "hell…"},
		{"hello world", 6, "…", "hello…"}, // the space before the marker is dropped
		{"hello", 3, "", "hel"},
		{"磁盘使用率超过阈值", 5, "…", "磁盘使用…"},
		{"磁盘使用率超过阈值", 9, "…", "磁盘使用率超过阈值"},
		{"😀😁😂🤣", 3, "…", "😀😁…"},
		{"👩‍👩‍👧 family", 2, "", "👩"}, // the dangling ZWJ is dropped
		{"❤️❤️", 1, "", "❤"},
		{"abcdef", 2, "[cut]", "ab"}, // the marker does not fit
		{"abcdef", 5, "[cut]", "[cut]"},
		{"abc", 0, "…", ""},
		{"abc", -1, "…", ""},
		{"", 3, "…", ""},
	}
	for _, tt := range tests {
		got := Truncate(tt.in, tt.max, tt.marker)
		if got != tt.want {
			t.Errorf("Truncate(%q, %d, %q) = %q, want %q", tt.in, tt.max, tt.marker, got, tt.want)
		}
		if !utf8.ValidString(got) {
			t.Errorf("Truncate(%q, %d, %q) = %q: invalid UTF-8", tt.in, tt.max, tt.marker, got)
		}
		if n := utf8.RuneCountInString(got); tt.max > 0 && n > tt.max {
			t.Errorf("Truncate(%q, %d, %q) has %d runes", tt.in, tt.max, tt.marker, n)
		}
	}
}

func FuzzPlainText(f *testing.F) {
	for _, s := range []string{
		mentionHTML, listRowHTML, "kong", "<p>a</p><p><br></p>", "<script>x</script>",
		"a &lt; b &amp;amp; &#x1F600; &#0; &#xD800;", "<a href='https://x'>y</a>", "<table><tr><td>",
		"<no value>", "\xff<p\xfe>", "<plaintext><p>x", "<p>" + strings.Repeat("<b>", 1000),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := FromHTML(s)
		if !utf8.ValidString(got) {
			t.Fatalf("FromHTML(%q) = %q: invalid UTF-8", s, got)
		}
		if got != strings.TrimSpace(got) {
			t.Fatalf("FromHTML(%q) = %q: not trimmed", s, got)
		}
		if strings.Contains(got, "\n\n\n") {
			t.Fatalf("FromHTML(%q) = %q: runs of blank lines", s, got)
		}
	})
}

func FuzzTruncate(f *testing.F) {
	f.Add("磁盘使用率😀", 3, "…")
	f.Fuzz(func(t *testing.T, s string, n int, marker string) {
		if !utf8.ValidString(s) || !utf8.ValidString(marker) {
			return
		}
		got := Truncate(s, n, marker)
		if !utf8.ValidString(got) {
			t.Fatalf("invalid UTF-8")
		}
		if n > 0 && utf8.RuneCountInString(got) > n {
			t.Fatalf("Truncate(%q, %d, %q) = %q: too long", s, n, marker, got)
		}
	})
}

// TestPlainTextPathological runs inputs that would take minutes if any step were
// quadratic.
func TestPlainTextPathological(t *testing.T) {
	for name, in := range map[string]string{
		"empty blocks":   strings.Repeat("<p> </p>", 1<<17),
		"nbsp blocks":    strings.Repeat("&nbsp;<div>", 1<<17),
		"open angles":    "<p>" + strings.Repeat("<", 1<<20),
		"ampersands":     "<p>" + strings.Repeat("&", 1<<20),
		"nested links":   strings.Repeat(`<a href="https://example.com/x">`, 1<<15),
		"unclosed attr":  `<p><span title="` + strings.Repeat("x", 1<<20),
		"spaces":         "<p>" + strings.Repeat(" ", 1<<20) + "x",
		"deep nesting":   strings.Repeat("<div><span>", 1<<16) + "x",
		"many brs":       strings.Repeat("<br>", 1<<18),
		"not html lines": strings.Repeat("a <no value>\n", 1<<16),
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			got := FromHTML(in)
			t.Logf("%d bytes → %d bytes in %v", len(in), len(got), time.Since(start))
		})
	}
}
