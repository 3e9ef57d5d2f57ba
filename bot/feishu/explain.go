package feishu

import "fmt"

// More Feishu codes worth a sentence to an operator. The codes the adapter acts on are
// in error.go.
const (
	codeTokenMissing      = 99991661 // no access token in the request
	codeNoScope           = 99991672 // the app lacks a permission scope
	codeIPDenied          = 99991401 // the caller's IP is not in the app's allow-list
	codeAppIDInvalid      = 10003    // invalid param: usually an unknown app id
	codeAppSecretInvalid  = 10014    // the app secret is wrong
	codeInvalidParam      = 230001   // message APIs: a parameter is invalid
	codeBotAbilityOff     = 230006   // the bot ability is off or not published
	codeNoPermission      = 230027   // the app lacks a scope for this message operation
	codeCardRejected      = 230099   // the card content was refused
	codeOperatorNotInChat = 232011   // chat APIs: the operator (the bot) is not in the chat
)

// explanations says in one sentence what a Feishu code means for issuebot. It holds
// meanings only: what to change is up to the caller, which knows its configuration.
var explanations = map[int]string{
	codeTokenInvalid:      "the tenant access token is invalid or expired (the bot fetches a new one by itself)",
	codeAppTokenInvalid:   "the app access token is invalid or expired",
	codeAccessTokenBad:    "the access token is invalid",
	codeTokenMissing:      "the request carried no access token",
	codeRateLimited:       "Feishu rate-limited the app (too many calls of one API per second); the bot backs off",
	codeTenantRateLimit:   "Feishu rate-limited message creation for the whole tenant",
	codeIPDenied:          "the caller's IP address is not in the app's IP allow-list",
	codeNoScope:           "the app lacks a permission scope this call needs (the message names it)",
	codeAppIDInvalid:      "the app id is not valid on this Open Platform (a Lark app on open.feishu.cn, or the reverse, or a typo)",
	codeAppSecretInvalid:  "the app secret does not match the app id",
	codeInvalidParam:      "Feishu refused a parameter of the call (for a chat id: no such chat)",
	codeNotInChat:         "the bot is not a member of the chat",
	codeOperatorNotInChat: "the bot (the operator) is not a member of the chat",
	codeBotAbilityOff:     "the app's bot ability is off, or the version that turns it on is not published",
	codeNoPermission:      "the app lacks a permission scope this message operation needs",
	codeChatRateLimited:   "the chat's rate limit was hit (5 messages a second per group, shared by every bot)",
	codeCardRejected:      "Feishu refused the card's content (malformed or unsupported card JSON)",
	codeMessageGone:       "the message was recalled or deleted",
	codePatchWindowEnded:  "the card is older than 14 days and can no longer be updated",
}

// Explain returns what a Feishu error code means, in one English sentence, or a
// generic text naming the code for codes it does not know.
func Explain(code int) string {
	if s, ok := explanations[code]; ok {
		return s
	}
	return fmt.Sprintf("Feishu error code %d; see the Open Platform's error code list "+
		"(https://open.feishu.cn/document/server-docs/api-call-guide/generic-error-code) and quote the log_id to support", code)
}
