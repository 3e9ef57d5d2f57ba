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
	first, rest, _ := strings.Cut(strings.Join(strings.Fields(t), " "), " ")
	switch strings.ToLower(first) {
	case "bind", "/bind", "绑定":
		return command{kind: cmdBind, text: rest}
	case "unbind", "/unbind", "解绑", "解除绑定":
		return command{kind: cmdUnbind, text: rest}
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

// isPrivate reports whether a message is a private remark that stays in the chat.
func isPrivate(text string) bool {
	return strings.HasPrefix(strings.TrimSpace(text), "//")
}
