{{/* Names, labels and the derived values every template shares. */}}

{{- define "button-consumer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "button-consumer.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "button-consumer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "button-consumer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "button-consumer.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "button-consumer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "button-consumer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "button-consumer.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "button-consumer.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "button-consumer.workloadKind" -}}
{{- if .Values.staticMembership.enabled -}}StatefulSet{{- else -}}Deployment{{- end -}}
{{- end -}}

{{/*
The pod's grace period, from the service's shutdown budget. DELIVERY_SHUTDOWN_TIMEOUT_SECONDS (S)
bounds the whole stop, split by the service itself (DeliverySettings.shutdown_budget): drain
in-flight work 50 %, commit what finished 15 %, leave the group 20 %, flush the producer 15 %;
then the producer's thread is joined (2 s) and the process exits. So it exits within S + 3
seconds; the grace period adds shutdown.marginSeconds. tests/deploy/test_chart.py asserts it.
*/}}
{{- define "button-consumer.shutdownBudgetSeconds" -}}
{{- add (int .Values.shutdown.timeoutSeconds) 3 -}}
{{- end -}}

{{- define "button-consumer.terminationGracePeriodSeconds" -}}
{{- add (include "button-consumer.shutdownBudgetSeconds" . | int) (int .Values.shutdown.marginSeconds) -}}
{{- end -}}

{{- define "button-consumer.maxReplicas" -}}
{{- $partitions := int .Values.kafka.partitions -}}
{{- $max := int .Values.keda.maxReplicaCount -}}
{{- if eq $max 0 -}}{{- $max = $partitions -}}{{- end -}}
{{- if gt $max $partitions -}}
{{- fail (printf "keda.maxReplicaCount (%d) exceeds kafka.partitions (%d): extra consumers would sit idle" $max $partitions) -}}
{{- end -}}
{{- if gt (int .Values.keda.minReplicaCount) $max -}}
{{- fail (printf "keda.minReplicaCount (%d) exceeds the maximum replica count (%d)" (int .Values.keda.minReplicaCount) $max) -}}
{{- end -}}
{{- $max -}}
{{- end -}}

{{/*
"true" when the service runs a dry run (config.DELIVERY_DRY_RUN), else "". The service then
consumes in its own group, <groupId> + "-dry-run" (consumer/settings.py, _as_run). Read as the
service reads it (pydantic's bool): true, 1, yes, on, y, t are on and false, 0, no, off, n, f
off, in any case; empty is unset (off); anything else the service refuses, so the render fails.
tests/deploy/test_chart.py compares the two on every spelling.
*/}}
{{- define "button-consumer.dryRun" -}}
{{- $raw := toString (index .Values.config "DELIVERY_DRY_RUN" | default "") -}}
{{- $value := lower $raw -}}
{{- if has $value (list "true" "1" "yes" "on" "y" "t") -}}
true
{{- else if not (has $value (list "" "false" "0" "no" "off" "n" "f")) -}}
{{- fail (printf "config.DELIVERY_DRY_RUN %q is not a boolean the service accepts: true, 1, yes, on, y, t or false, 0, no, off, n, f (any case)" $raw) -}}
{{- end -}}
{{- end -}}

{{/* The consumer group the pods join: the dry run's own under DELIVERY_DRY_RUN. */}}
{{- define "button-consumer.consumerGroup" -}}
{{- .Values.kafka.groupId -}}{{- if include "button-consumer.dryRun" . -}}-dry-run{{- end -}}
{{- end -}}

{{- define "button-consumer.validate" -}}
{{- if not .Values.kafka.bootstrapServers -}}
{{- fail "kafka.bootstrapServers is required" -}}
{{- end -}}
{{- /* The dry run is judged on every render: the ConfigMap carries it whatever the other
values. Inside the guard below it was read only without button.existingSecret (the template's
`and` stops at its first empty argument). values.schema.json refuses the same values first. */ -}}
{{- $dryRun := include "button-consumer.dryRun" . -}}
{{- if and (not .Values.button.existingSecret) (not $dryRun) -}}
{{- fail "button.existingSecret is required (the name of a Secret holding the API key), unless config.DELIVERY_DRY_RUN is on (\"true\")" -}}
{{- end -}}
{{- if gt (int .Values.replicaCount) (int .Values.kafka.partitions) -}}
{{- fail (printf "replicaCount (%d) exceeds kafka.partitions (%d): extra consumers would sit idle" (int .Values.replicaCount) (int .Values.kafka.partitions)) -}}
{{- end -}}
{{- /* A StatefulSet labels its pods controller-revision-hash=<name>-<hash of up to 10
characters>, a label value of at most 63 characters: with a longer name the controller creates
no pod (kubernetes/kubernetes#64023). */ -}}
{{- $fullname := include "button-consumer.fullname" . -}}
{{- if and (eq (include "button-consumer.workloadKind" .) "StatefulSet") (gt (len $fullname) 52) -}}
{{- fail (printf "the StatefulSet's name %q has %d characters, over the 52 a StatefulSet's name may have (its pods' controller-revision-hash label is the name, a dash and a hash of up to 10 characters, at most 63): shorten fullnameOverride (or the release name, or nameOverride) to 52 characters or fewer" $fullname (len $fullname)) -}}
{{- end -}}
{{- end -}}


{{/* The NetworkPolicy's egress ports to Kafka, as a JSON list: networkPolicy.kafka.ports when
set, else every distinct port of kafka.bootstrapServers (a server without one: librdkafka's
default, 9092). */}}
{{- define "button-consumer.kafkaPorts" -}}
{{- $ports := list -}}
{{- if .Values.networkPolicy.kafka.ports -}}
{{- $ports = .Values.networkPolicy.kafka.ports -}}
{{- else -}}
{{- range $server := splitList "," .Values.kafka.bootstrapServers -}}
{{- if trim $server -}}
{{- $port := regexFind ":[0-9]+$" (trim $server) | trimPrefix ":" | default "9092" -}}
{{- $ports = append $ports (int $port) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $ports | uniq | toJson -}}
{{- end -}}

{{/* The NetworkPolicy's egress ports to the registry, as a JSON list:
networkPolicy.registry.ports when set, else the port of each URL of schemaRegistry.url
(comma-separated), or its scheme's default (443 for https, 80 for http). */}}
{{- define "button-consumer.registryPorts" -}}
{{- $ports := list -}}
{{- if .Values.networkPolicy.registry.ports -}}
{{- $ports = .Values.networkPolicy.registry.ports -}}
{{- else -}}
{{- range $raw := splitList "," .Values.schemaRegistry.url -}}
{{- if trim $raw -}}
{{- $url := urlParse (trim $raw) -}}
{{- $port := regexFind ":[0-9]+$" $url.host | trimPrefix ":" -}}
{{- if not $port -}}
{{- $port = ternary "443" "80" (eq (lower $url.scheme) "https") -}}
{{- end -}}
{{- $ports = append $ports (int $port) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $ports | uniq | toJson -}}
{{- end -}}
