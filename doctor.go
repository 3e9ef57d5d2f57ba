package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	berrors "go.etcd.io/bbolt/errors"

	"issuebot/bot/feishu"
	"issuebot/guance"
	"issuebot/store"
)

const (
	// doctorTimeout bounds each call doctor makes, so that a platform that does not
	// answer fails its check instead of hanging the command.
	doctorTimeout = 8 * time.Second
	// doctorLockWait is how long doctor waits for the embedded store's file lock: a
	// running issuebot holds it for good, so waiting longer tells nothing more.
	doctorLockWait = time.Second
	// maxDoctorChats bounds how many routed chats doctor asks Feishu about.
	maxDoctorChats = 50
)

// doctor checks the setup against the real platforms with the configuration in environ
// and prints one line per check to out: "✓ <check>" or "✗ <check>: <what is wrong> —
// <the fix>". It returns the exit code: 0 when every check passed, 1 otherwise.
//
// It sends nothing anyone sees, writes nothing the running bot reads, and spends one
// Guance request (Guance allows 20 a minute per key; the bot spends at most
// GUANCE_RATE_LIMIT, 18 by default). No secret reaches out: the lines never format one,
// and every line is scrubbed of them before it is written.
func doctor(ctx context.Context, environ []string, out io.Writer) int {
	cfg, err := parseConfig(environ)
	r := &report{out: out, secrets: secretsOf(cfg)}
	d := &checkup{cfg: cfg, r: r, bad: map[string]bool{}}
	var ce *ConfigError
	switch {
	case errors.As(err, &ce):
		for _, p := range ce.Problems {
			key, msg, _ := strings.Cut(p, ": ")
			d.bad[key] = true
			r.fail("configuration", key+": "+msg, configFix(key))
		}
	case err != nil:
		r.fail("configuration", err.Error(), "fix the environment variables (see the Configuration table in README.md)")
		return r.exitCode()
	default:
		where := "embedded in DATA_DIR=" + cfg.DataDir
		if cfg.RedisURL != "" {
			where = "Redis at " + redisHost(cfg.RedisURL)
		}
		r.pass("configuration", fmt.Sprintf("every variable is valid (FEISHU_EVENT_MODE=%s, store %s)", cfg.FeishuEventMode, where))
	}

	fc := d.feishuApp(ctx)
	d.eventIntake(ctx, fc != nil)
	routes, routesKnown := d.store(ctx)
	d.chats(ctx, fc, routes, routesKnown)
	d.guance(ctx)
	return r.exitCode()
}

// report writes the lines of one doctor run and counts the failures.
type report struct {
	out     io.Writer
	secrets []string
	failed  int
}

func (r *report) pass(check, detail string) {
	line := "✓ " + check
	if detail != "" {
		line += ": " + detail
	}
	r.write(line)
}

func (r *report) fail(check, problem, fix string) {
	r.failed++
	r.write("✗ " + check + ": " + problem + " — " + fix)
}

// write prints one line with every secret replaced, in case an error Feishu, Guance or
// Redis composed should echo one.
func (r *report) write(line string) {
	for _, s := range r.secrets {
		line = strings.ReplaceAll(line, s, "[redacted]")
	}
	_, _ = fmt.Fprintln(r.out, line)
}

func (r *report) exitCode() int {
	if r.failed > 0 {
		return 1
	}
	return 0
}

// secretsOf lists the configuration's secrets that are long enough to scrub without
// mangling ordinary words.
func secretsOf(cfg Config) []string {
	all := []string{cfg.FeishuAppSecret, cfg.FeishuEncryptKey, cfg.FeishuVerificationToken, cfg.GuanceAPIKey, cfg.GuanceWebhookToken}
	if u, err := url.Parse(cfg.RedisURL); err == nil && u.User != nil {
		pw, _ := u.User.Password()
		all = append(all, pw)
	}
	var out []string
	for _, s := range all {
		if len(s) >= 4 {
			out = append(out, s)
		}
	}
	return out
}

// redisHost returns the host:port of a Redis URL, never its user or password.
func redisHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(unparsable REDIS_URL)"
	}
	return u.Host
}

// count returns "1 route", "2 routes".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// configFix says how to mend one bad variable.
func configFix(key string) string {
	switch key {
	case "FEISHU_APP_ID", "FEISHU_APP_SECRET":
		return "copy App ID and App Secret from the app's 凭证与基础信息 (Credentials & Basic Info) page in the Feishu console into FEISHU_APP_ID / FEISHU_APP_SECRET"
	case "GUANCE_API_KEY":
		return "create a key in Guance 管理 → API Key 管理 (Management → API Keys) and put its secret into GUANCE_API_KEY"
	case "FEISHU_ENCRYPT_KEY", "FEISHU_VERIFICATION_TOKEN":
		return "copy Encrypt Key and Verification Token from the console's 事件与回调 → 加密策略 into FEISHU_ENCRYPT_KEY / FEISHU_VERIFICATION_TOKEN, or use FEISHU_EVENT_MODE=ws"
	case "FEISHU_CHAT_ID":
		return "set FEISHU_CHAT_ID to the group's chat id (oc_…), or leave it empty"
	}
	return "set " + key + " as the Configuration table in README.md describes"
}

// checkup is the state of one doctor run.
type checkup struct {
	cfg Config
	r   *report
	// bad holds the variables parseConfig refused; checks that need one are skipped.
	bad map[string]bool
}

// needs reports whether every variable in keys is valid; if not, it prints the check
// as not checked, naming the first bad one.
func (d *checkup) needs(check string, keys ...string) bool {
	for _, k := range keys {
		if d.bad[k] {
			d.r.fail(check, "not checked: "+k+" is invalid (see above)", "fix "+k+" first")
			return false
		}
	}
	return true
}

// call returns a context for one remote call.
func (d *checkup) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, doctorTimeout)
}

var feishuVars = []string{"FEISHU_APP_ID", "FEISHU_APP_SECRET", "FEISHU_BASE_URL"}

// feishuApp checks the app's credentials and its bot ability, and returns a client with
// a valid tenant token, or nil when the credentials do not work.
func (d *checkup) feishuApp(ctx context.Context) *feishu.Client {
	const creds, bot = "feishu app credentials", "feishu bot ability"
	if !d.needs(creds, feishuVars...) {
		d.r.fail(bot, "not checked: no tenant access token", "fix the app credentials first")
		return nil
	}
	fc, err := feishu.NewClient(feishu.Config{
		AppID: d.cfg.FeishuAppID, AppSecret: d.cfg.FeishuAppSecret, BaseURL: d.cfg.FeishuBaseURL,
		Timeout: doctorTimeout,
	})
	if err != nil {
		d.r.fail(creds, err.Error(), "set FEISHU_APP_ID and FEISHU_APP_SECRET")
		return nil
	}
	cctx, cancel := d.call(ctx)
	err = fc.CheckCredentials(cctx)
	cancel()
	if err != nil {
		d.r.fail(creds, "no tenant access token: "+feishuProblem(err), credentialsFix(err, d.cfg.FeishuAppID))
		d.r.fail(bot, "not checked: no tenant access token", "fix the app credentials first")
		return nil
	}
	d.r.pass(creds, "tenant access token obtained for "+d.cfg.FeishuAppID+" at "+d.cfg.FeishuBaseURL)

	cctx, cancel = d.call(ctx)
	info, err := fc.BotInfo(cctx)
	cancel()
	var fe *feishu.Error
	switch {
	case errors.As(err, &fe) && fe.MissingScope():
		d.r.fail(bot, "GET /open-apis/bot/v3/info refused: "+feishuProblem(err),
			"add the scope Feishu names in 权限管理 (Permissions) and publish a version (版本管理与发布)")
	case errors.As(err, &fe):
		d.r.fail(bot, "GET /open-apis/bot/v3/info refused: "+feishuProblem(err),
			"turn the bot on in the console: 添加应用能力 → 机器人 (Add features → Bot), then publish a version (版本管理与发布) and have it approved")
	case err != nil:
		d.r.fail(bot, "GET /open-apis/bot/v3/info failed: "+feishuProblem(err), reachFeishuFix)
	case !info.Enabled():
		d.r.fail(bot, fmt.Sprintf("the app is not enabled in the tenant (activate_status %d)", info.ActivateStatus),
			"publish a version (版本管理与发布) and have a tenant admin approve and enable the app")
	default:
		name := ""
		if info.AppName != "" {
			name = fmt.Sprintf(" %q", info.AppName)
		}
		d.r.pass(bot, fmt.Sprintf("bot%s is on (open_id %s)", name, info.OpenID))
	}
	return fc
}

// reachFeishuFix is the fix for a Feishu that cannot be reached or does not answer
// like the Open Platform.
const reachFeishuFix = "check FEISHU_BASE_URL (https://open.feishu.cn, or https://open.larksuite.com for Lark) and that this host can reach it (proxy, firewall)"

// credentialsFix says what to change when no tenant token could be had.
func credentialsFix(err error, appID string) string {
	var fe *feishu.Error
	if !errors.As(err, &fe) {
		return reachFeishuFix
	}
	switch fe.Code {
	case 10003:
		return "copy the App ID from 凭证与基础信息 (Credentials & Basic Info) into FEISHU_APP_ID; a Lark app also needs FEISHU_BASE_URL=https://open.larksuite.com"
	case 10014:
		return "copy the App Secret of " + appID + " from 凭证与基础信息 (Credentials & Basic Info) into FEISHU_APP_SECRET, and check FEISHU_APP_ID is that app's"
	}
	return "check FEISHU_APP_ID and FEISHU_APP_SECRET against the console's 凭证与基础信息 (Credentials & Basic Info) page"
}

// feishuProblem describes a failed Feishu call: the code, what it means, and Feishu's
// own words and log id.
func feishuProblem(err error) string {
	var fe *feishu.Error
	if !errors.As(err, &fe) {
		return err.Error()
	}
	s := ""
	if fe.Code != 0 {
		s = fmt.Sprintf("code %d (%s)", fe.Code, feishu.Explain(fe.Code))
	} else if fe.HTTPStatus != 0 {
		s = fmt.Sprintf("HTTP %d", fe.HTTPStatus)
	}
	var extra []string
	if fe.Msg != "" {
		extra = append(extra, fmt.Sprintf("Feishu says %q", fe.Msg))
	}
	if fe.LogID != "" {
		extra = append(extra, "log_id "+fe.LogID)
	}
	if len(extra) > 0 {
		if s != "" {
			s += " "
		}
		s += "[" + strings.Join(extra, ", ") + "]"
	}
	return s
}

// eventIntake checks the way events come in: over the long connection, that Feishu
// hands the app an endpoint; over HTTP, that the secrets which authenticate events
// are set.
func (d *checkup) eventIntake(ctx context.Context, credsOK bool) {
	if d.bad["FEISHU_EVENT_MODE"] {
		d.needs("feishu event intake", "FEISHU_EVENT_MODE")
		return
	}
	if d.cfg.FeishuEventMode == feishu.ModeHTTP {
		const check = "feishu event intake (http)"
		var missing []string
		if d.cfg.FeishuEncryptKey == "" {
			missing = append(missing, "FEISHU_ENCRYPT_KEY")
		}
		if d.cfg.FeishuVerificationToken == "" {
			missing = append(missing, "FEISHU_VERIFICATION_TOKEN")
		}
		if len(missing) > 0 {
			d.r.fail(check, strings.Join(missing, " and ")+" not set", configFix(missing[0]))
			return
		}
		d.r.pass(check, "FEISHU_ENCRYPT_KEY and FEISHU_VERIFICATION_TOKEN are set; the console's request URL must be https://<this host>/feishu/events")
		return
	}
	const check = "feishu event intake (long connection)"
	if !d.needs(check, feishuVars...) {
		return
	}
	if !credsOK {
		d.r.fail(check, "not checked: the app credentials do not work (see above)", "fix the app credentials first")
		return
	}
	cctx, cancel := d.call(ctx)
	err := feishu.CheckLongConnection(cctx, &http.Client{Timeout: doctorTimeout},
		d.cfg.FeishuBaseURL, d.cfg.FeishuAppID, d.cfg.FeishuAppSecret)
	cancel()
	if err == nil {
		d.r.pass(check, "Feishu hands out a long-connection endpoint for "+d.cfg.FeishuAppID)
		return
	}
	problem := "the endpoint refused: "
	var fe *feishu.Error
	if !errors.As(err, &fe) {
		d.r.fail(check, problem+err.Error(), "FEISHU_BASE_URL does not serve the long connection: "+
			"set it to https://open.feishu.cn (or https://open.larksuite.com), let this host reach it, or use FEISHU_EVENT_MODE=http")
		return
	}
	// The endpoint's codes are its own (larkws), not the Open API's, so Explain is not asked.
	problem += fmt.Sprintf("code %d, HTTP %d", fe.Code, fe.HTTPStatus)
	if fe.Msg != "" {
		problem += fmt.Sprintf(" [Feishu says %q]", fe.Msg)
	}
	switch {
	case fe.Code == feishu.WSExceedConnLimit:
		d.r.fail(check, problem+": the app holds as many long connections as Feishu allows",
			"stop the other copies running with FEISHU_APP_ID (each steals events from the others)")
	case fe.Code == feishu.WSSystemBusy || fe.Code == feishu.WSInternalError || fe.HTTPStatus >= 500:
		d.r.fail(check, problem+": Feishu is busy", "run doctor again in a minute; if it persists, check FEISHU_BASE_URL")
	default:
		d.r.fail(check, problem,
			"check FEISHU_APP_ID / FEISHU_APP_SECRET and FEISHU_BASE_URL, choose 使用长连接接收事件 (long connection) in 事件与回调, and publish a version")
	}
}

// store checks that the store opens and returns its routes; known is false when they
// could not be read. It writes nothing the bot reads: a Redis store is only read, and
// the embedded file is opened only when no other process holds it.
func (d *checkup) store(ctx context.Context) (routes []store.Route, known bool) {
	const check = "store"
	if !d.needs(check, "REDIS_URL", "DATA_DIR") {
		return nil, false
	}
	if d.cfg.RedisURL != "" {
		host := redisHost(d.cfg.RedisURL)
		cctx, cancel := d.call(ctx)
		defer cancel()
		st, err := store.Open(cctx, d.cfg.RedisURL, "")
		if err != nil {
			d.r.fail(check, "cannot use Redis at "+host+": "+err.Error(),
				"check REDIS_URL (host, port, password, database; rediss:// for TLS) and that Redis is running")
			return nil, false
		}
		defer st.Close()
		routes, err := st.Routes(cctx)
		if err != nil {
			d.r.fail(check, "Redis at "+host+" answers a ping but not a read: "+err.Error(),
				"check REDIS_URL's user and database, and Redis's ACL and memory")
			return nil, false
		}
		d.r.pass(check, fmt.Sprintf("Redis at %s answers (%s)", host, count(len(routes), "route")))
		return routes, true
	}

	path := filepath.Join(d.cfg.DataDir, store.EmbeddedFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		// Nothing to lock yet: check that the bot could create the file, and leave
		// nothing behind.
		if err := checkWritable(d.cfg.DataDir); err != nil {
			d.r.fail(check, "DATA_DIR "+d.cfg.DataDir+" is not writable: "+err.Error(),
				"make DATA_DIR a directory this user may write (in a container, a volume owned by uid 65532), or set REDIS_URL")
			return nil, false
		}
		d.r.pass(check, "DATA_DIR "+d.cfg.DataDir+" is writable; "+store.EmbeddedFile+" will be created at the first start (no routes yet)")
		return nil, true
	}
	cctx, cancel := d.call(ctx)
	defer cancel()
	st, err := store.Open(cctx, "", d.cfg.DataDir, store.WithLockTimeout(doctorLockWait))
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		d.r.fail(check, "another issuebot holds "+path+" (DATA_DIR="+d.cfg.DataDir+")",
			"stop it or use another DATA_DIR (with REDIS_URL, doctor can run beside the bot)")
		return nil, false
	case err != nil:
		d.r.fail(check, "cannot open "+path+": "+err.Error(),
			"make DATA_DIR a directory this user may read and write, or move the damaged file away (or set REDIS_URL)")
		return nil, false
	}
	defer st.Close()
	routes, err = st.Routes(cctx)
	if err != nil {
		d.r.fail(check, "cannot read "+path+": "+err.Error(), "move the damaged file away, or set another DATA_DIR")
		return nil, false
	}
	d.r.pass(check, fmt.Sprintf("%s opened and locked (%s)", path, count(len(routes), "route")))
	return routes, true
}

// checkWritable reports whether dir, or the nearest directory above it that exists,
// lets this process create a file, by creating and removing one.
func checkWritable(dir string) error {
	for {
		fi, err := os.Stat(dir)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s is not a directory", dir)
			}
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return err
		}
		dir = parent
	}
	f, err := os.CreateTemp(dir, ".issuebot-doctor-*")
	if err != nil {
		return err
	}
	name := f.Name()
	_ = f.Close()
	return os.Remove(name)
}

// chats checks that the default chat and every routed chat exist and hold the bot.
func (d *checkup) chats(ctx context.Context, fc *feishu.Client, routes []store.Route, routesKnown bool) {
	type target struct{ chatID, check, fix string }
	var targets []target
	switch {
	case d.bad["FEISHU_CHAT_ID"]:
		d.needs("default chat", "FEISHU_CHAT_ID")
	case d.cfg.FeishuChatID == "":
		note := "FEISHU_CHAT_ID is not set: only routed chats get issues"
		if routesKnown && len(routes) == 0 {
			note += " (there are no routes yet, so no chat gets any until one is bound or FEISHU_CHAT_ID is set)"
		}
		d.r.pass("default chat", note)
	default:
		targets = append(targets, target{d.cfg.FeishuChatID, "default chat " + d.cfg.FeishuChatID + " (FEISHU_CHAT_ID)",
			"or set FEISHU_CHAT_ID to a group the bot is in"})
	}
	seen := map[string]bool{d.cfg.FeishuChatID: true}
	var skipped int
	for _, rt := range routes {
		if seen[rt.ChatID] {
			continue
		}
		seen[rt.ChatID] = true
		if len(targets) >= maxDoctorChats {
			skipped++
			continue
		}
		targets = append(targets, target{rt.ChatID, "routed chat " + rt.ChatID + " (channel " + rt.ChannelUUID + ")",
			"or delete the route to it"})
	}
	for _, t := range targets {
		if fc == nil {
			d.r.fail(t.check, "not checked: no tenant access token", "fix the app credentials first")
			continue
		}
		d.chat(ctx, fc, t.chatID, t.check, t.fix)
	}
	if !routesKnown {
		d.r.fail("routed chats", "not checked: the store could not be read (see above)", "fix the store first")
	}
	if skipped > 0 {
		d.r.pass("routed chats", fmt.Sprintf("%d more chats not checked (doctor asks about at most %d)", skipped, maxDoctorChats))
	}
}

// chat checks one chat; orFix is the alternative to adding the bot.
func (d *checkup) chat(ctx context.Context, fc *feishu.Client, chatID, check, orFix string) {
	const addBot = "add the bot to the group (群设置 → 群机器人 → 添加机器人 / Settings → Bots → Add bot), "
	cctx, cancel := d.call(ctx)
	in, err := fc.BotInChat(cctx, chatID)
	cancel()
	var fe *feishu.Error
	switch {
	case err == nil && in:
		d.r.pass(check, "the bot is a member")
	case err == nil:
		d.r.fail(check, "the bot is not a member", addBot+orFix)
	case errors.As(err, &fe) && fe.NotChatMember():
		d.r.fail(check, "the bot is not a member: "+feishuProblem(err), addBot+orFix)
	case errors.As(err, &fe) && fe.MissingScope():
		d.r.fail(check, "Feishu refused to say: "+feishuProblem(err),
			"add the scope Feishu names (im:chat:readonly) in 权限管理 (Permissions) and publish a version")
	case errors.As(err, &fe) && !fe.Temporary():
		d.r.fail(check, "no such chat, or none the app may see: "+feishuProblem(err),
			"check the chat id (oc_…) and that the bot was added to it, "+orFix)
	default:
		d.r.fail(check, "Feishu did not answer: "+feishuProblem(err), "run doctor again; if it persists, "+reachFeishuFix)
	}
}

// guance checks the API key with one request, which also tells whether the key is
// throttled right now.
func (d *checkup) guance(ctx context.Context) {
	const check = "guance api key"
	if !d.needs(check, "GUANCE_API_KEY", "GUANCE_BASE_URL") {
		return
	}
	gc, err := guance.NewClient(d.cfg.GuanceBaseURL, d.cfg.GuanceAPIKey,
		guance.WithHTTPClient(&http.Client{Timeout: doctorTimeout}),
		guance.WithLimiter(nil)) // one request: nothing to pace
	if err != nil {
		d.r.fail(check, err.Error(), "check GUANCE_BASE_URL and GUANCE_API_KEY")
		return
	}
	cctx, cancel := d.call(ctx)
	chans, err := gc.ListChannels(cctx)
	cancel()
	base := d.cfg.GuanceBaseURL
	var ge *guance.Error
	switch {
	case err == nil:
		d.r.pass(check, fmt.Sprintf("%s accepts the key and is not throttling it (%s)", base, count(len(chans), "channel")))
	case errors.Is(err, guance.ErrThrottled):
		d.r.fail(check, "throttled right now: another client spends this key's 20 requests a minute ("+err.Error()+")",
			"give issuebot a key of its own in GUANCE_API_KEY (or stop the other client), or lower GUANCE_RATE_LIMIT")
	case errors.Is(err, guance.ErrBadKey):
		d.r.fail(check, "Guance refused the key ("+err.Error()+")",
			"create a key in Guance 管理 → API Key 管理 (as an administrator) and put its secret into GUANCE_API_KEY; "+
				"check GUANCE_BASE_URL is the site of that workspace")
	case errors.As(err, &ge) && ge.StatusCode >= 500:
		d.r.fail(check, "Guance failed ("+err.Error()+")", "run doctor again in a minute; if it persists, check GUANCE_BASE_URL and Guance's status")
	case errors.As(err, &ge):
		d.r.fail(check, "Guance's OpenAPI is not at "+base+" ("+err.Error()+")",
			"set GUANCE_BASE_URL to your site's OpenAPI address, e.g. https://openapi.guance.com or https://us1-openapi.guance.com (not the console's)")
	default:
		d.r.fail(check, "cannot reach Guance's OpenAPI at "+base+": "+err.Error(),
			"set GUANCE_BASE_URL to your site's OpenAPI address (e.g. https://openapi.guance.com) and let this host reach it (proxy, firewall)")
	}
}
