// Jenkins shared-library step for `pipeline`: runs one command with
// `--output json` and returns its result, parsed (a Map, with `exit_code`
// and, when it failed, `kind`).
//
// Named pipelineStep, not pipeline: Declarative Pipeline already defines a
// global variable `pipeline` (the `pipeline { }` block), and a library
// variable of the same name would shadow it or be shadowed by it.
//
//   def built = pipelineStep(command: 'build')          // built.ami
//   pipelineStep(command: 'deploy', env: 'staging')
//   pipelineStep(command: 'deploy', slot: 'idle')        // the slot www does not point at
//   pipelineStep(command: 'promote', args: ['--lock-timeout', '10m'])
//   pipelineStep(command: 'test', run: 'npm ci && npm test')
//
// Arguments: command (test, build, deploy, task, promote, rollback, watch,
// status, history, unlock, gc, iam-policy, config; required), env or slot
// (deploy; slot: 'idle'; task: env), to (promote), commit (default
// GIT_COMMIT, which the binary reads itself), run (test: a shell command
// line), args (extra arguments: a List, one argument an element, or a
// String, one argument a line; never split on spaces), config (default
// pipeline.yaml), failOnError (default true: a non-zero exit fails the
// build, with the error).
// The binary: `binary` if given; else the release of VERSION for the
// agent's OS and architecture (releaseUrl: where releases are), its SHA-256
// checked before it runs (resources/pipeline/install.sh, a copy of
// integrations/install.sh: Jenkins refuses symlinks), cached on the
// agent by version; built with cargo from `source` where no release exists
// (install: auto, download, cargo or path).
// Needs the Pipeline Utility Steps plugin (readJSON). See docs/ci.md.

import groovy.transform.Field

// The pipeline version this library installs: its one pin.
@Field static final String VERSION = '0.1.0'

def call(Map opts = [:]) {
    String command = opts.command ?: error('pipeline: the command argument is required')
    String binary = opts.binary ?: install(opts)
    List<String> argv = [binary, '--config', opts.config ?: 'pipeline.yaml', '--output', 'json', command]
    switch (command) {
        case 'deploy':
            if (opts.slot) { argv += ['--slot', opts.slot as String] }
            else if (opts.env) { argv += ['--env', opts.env as String] }
            else { error('pipeline: deploy needs env or slot') }
            break
        case 'task':
            if (!opts.env) { error('pipeline: task needs env') }
            argv += ['--env', opts.env as String]
            break
        case 'promote':
            if (opts.to) { argv += ['--to', opts.to as String] }
            break
        case ['test', 'build', 'rollback', 'watch', 'status', 'history', 'unlock', 'gc', 'iam-policy', 'config']:
            break
        default:
            error("pipeline: unknown command '${command}' (test, build, deploy, task, promote, rollback, watch, status, history, unlock, gc, iam-policy, config)")
    }
    if (opts.commit && command in ['test', 'build', 'deploy', 'task', 'promote']) {
        argv += ['--commit', opts.commit as String]
    }
    List<String> extra = []
    if (opts.args instanceof List) { extra = opts.args.collect { it as String } }
    else if (opts.args) { extra = (opts.args as String).readLines().findAll { it } }
    if (command == 'test') {
        argv += opts.run ? extra + ['--', 'bash', '-c', opts.run as String] : ['--'] + extra
    } else {
        argv += extra
    }

    String out = ".pipeline-${command}-${env.BUILD_NUMBER ?: '0'}-${UUID.randomUUID()}.json"
    int code = sh(script: argv.collect { shellQuote(it) }.join(' ') + " > ${shellQuote(out)}",
                  returnStatus: true)
    String text = readFile(out).trim()
    sh(script: "rm -f ${shellQuote(out)}")
    Map result = text ? readJSON(text: text) : [ok: false, error: 'no output']
    if (code != 0 && opts.get('failOnError', true)) {
        error("pipeline ${command} failed (exit ${code}${result.kind ? ', ' + result.kind : ''}): ${result.error ?: 'see the log'}")
    }
    result.exit_code = code
    return result
}

// Installs the binary with the library's install.sh; returns its path.
private String install(Map opts) {
    // Names of its own: parallel branches may share the workspace.
    String script = ".pipeline-install-${UUID.randomUUID()}.sh"
    String found = "${script}.out"
    writeFile(file: script, text: libraryResource('pipeline/install.sh'))
    List<String> vars = ["PIPELINE_VERSION=${VERSION}",
                         "PIPELINE_INSTALL=${opts.install ?: 'auto'}"]
    if (opts.releaseUrl) { vars << "PIPELINE_RELEASE_URL=${opts.releaseUrl}" }
    if (opts.source) { vars << "PIPELINE_SOURCE=${opts.source}" }
    // Its exit code fails the step (a checksum that does not match: 3);
    // the path is the last line it prints.
    withEnv(vars) { sh(script: "bash ${shellQuote(script)} > ${shellQuote(found)}") }
    String bin = readFile(found).trim().readLines().last()
    sh(script: "rm -f ${shellQuote(script)} ${shellQuote(found)}")
    return bin
}

private String shellQuote(String s) {
    return "'" + s.replace("'", "'\\''") + "'"
}
