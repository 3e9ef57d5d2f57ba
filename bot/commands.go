package bot

import (
	"regexp"
	"strings"
)

// commandKind is what a message addressed to the bot asks for.
type commandKind int

const (
	cmdNone    commandKind = iota // not a command: in a card's thread, a reply to sync
	cmdHelp                       // help
	cmdCompat                     // #issue_uuid#text: post text to that issue (the old script's form)
	cmdResolve                    // resolve / pending / reopen: text forms of the card buttons
	cmdPending
	cmdReopen
	cmdStatus // status: the bridge's health
	cmdList   // list: this chat's open issues
	cmdBind   // bind [channel [level]]: route a channel here, or show this chat's routes
	cmdUnbind // unbind [channel]: remove one route, or all of this chat's
)

// command is a parsed message.
type command struct {
	kind      commandKind
	issueUUID string // cmdCompat
	text      string // cmdCompat: the reply text; cmdBind, cmdUnbind: the arguments
}

// compatRe finds "#issue_xxx#text" anywhere in a message, as the old flow-webhook
// setup asked people to type it.
var compatRe = regexp.MustCompile(`#\s*(issue_[A-Za-z0-9_-]+)\s*#`)

// parseCommand reads a message's text (bot mention already removed). Commands are
// only read from messages that address the bot (an @mention or a direct chat);
// everything else is cmdNone. All parsing of user commands happens here.
func parseCommand(text string, addressed bool) command {
	if !addressed {
		return command{}
	}
	t := strings.TrimSpace(text)
	if loc := compatRe.FindStringSubmatchIndex(t); loc != nil {
		return command{
			kind:      cmdCompat,
			issueUUID: t[loc[2]:loc[3]],
			text:      strings.TrimSpace(t[loc[1]:]),
		}
	}
	word := strings.ToLower(strings.TrimRight(t, " .!。！"))
	// bind [channel [P0-P3]] and unbind [channel], exactly: a thread reply that only
	// starts with the word ("unbind the old replica first") is a reply.
	words := strings.Fields(t)
	if len(words) > 0 {
		args := words[1:]
		switch strings.ToLower(words[0]) {
		case "bind", "/bind", "绑定":
			if len(args) <= 1 || (len(args) == 2 && levelArg(args[1])) {
				return command{kind: cmdBind, text: strings.Join(args, " ")}
			}
		case "unbind", "/unbind", "解绑", "解除绑定":
			if len(args) <= 1 {
				return command{kind: cmdUnbind, text: strings.Join(args, " ")}
			}
		}
	}
	switch word {
	case "help", "帮助", "?", "？", "/help":
		return command{kind: cmdHelp}
	case "resolve", "resolved", "解决", "已解决", "/resolve":
		return command{kind: cmdResolve}
	case "pending", "挂起", "/pending":
		return command{kind: cmdPending}
	case "reopen", "重新打开", "/reopen":
		return command{kind: cmdReopen}
	case "status", "状态", "/status":
		return command{kind: cmdStatus}
	case "list", "列表", "/list":
		return command{kind: cmdList}
	}
	return command{}
}

// levelArg reports whether s names a level a route can take (P0 to P3, any case; a
// bind answers the other P-words with its usage).
func levelArg(s string) bool {
	return len(s) == 2 && (s[0] == 'P' || s[0] == 'p') && s[1] >= '0' && s[1] <= '9'
}

// isPrivate reports whether a message is a private remark that stays in the chat.
func isPrivate(text string) bool {
	return strings.HasPrefix(strings.TrimSpace(text), "//")
}
